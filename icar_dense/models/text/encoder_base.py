# Copyright (c) icar_dense contributors. All rights reserved.
"""The interface every text tower of ``TextClassifier`` implements:
``encode(texts) -> (N, D)`` in batches, with a progress bar for long runs,
and a ``cache_signature`` for the embedding cache keys."""
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.dist import is_main_process as _is_main_process
from mmengine.model import BaseModule
from mmengine.utils import ProgressBar

__all__ = ['BaseTextEncoder']


class BaseTextEncoder(BaseModule):
    """Common interface of the text towers used by ``TextClassifier``.

    Subclasses implement :meth:`encode_batch` and :meth:`cache_signature`.

    Args:
        embed_dim (int): Width of the returned embeddings.
        batch_size (int): Texts per forward pass in :meth:`encode`.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 embed_dim: int,
                 batch_size: int = 256,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        self.embed_dim = embed_dim
        self.batch_size = batch_size
        # batches from which encode() shows a progress bar
        self.progress_min_batches = 4

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_batch(self, texts: List[str]) -> torch.Tensor:
        """Embed one batch of texts, shape (N, embed_dim), unnormalised."""
        raise NotImplementedError

    def cache_signature(self) -> Dict[str, Any]:
        """What, besides the weights, the embeddings of a text depend on."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts in batches of ``batch_size``.

        Args:
            texts (Sequence[str]): The texts.

        Returns:
            torch.Tensor: Unnormalised embeddings, shape (N, embed_dim).
        """
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        starts = range(0, len(texts), self.batch_size)
        # a large vocabulary x templates takes minutes on a CPU: show it,
        # on stderr so that tools printing JSON on stdout stay parseable
        bar = None
        if len(starts) >= self.progress_min_batches and _is_main_process():
            bar = ProgressBar(len(texts), file=sys.stderr)
        outs = []
        for i in starts:
            outs.append(self.encode_batch(texts[i:i + self.batch_size]))
            if bar is not None:
                bar.update(len(outs[-1]))
        if bar is not None:
            sys.stderr.write('\n')
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)
