# Copyright (c) icar_dense contributors. All rights reserved.
"""Precomputed class embeddings: the file ``TextClassifier(embeddings=...)``
reads instead of running a text encoder.

``tools/build_vocab_embeddings.py`` (``TextClassifier.save_embeddings``)
writes ``class_names``, the prompt-ensembled ``embeddings`` (C, D),
``templates`` and ``meta``; a vocabulary then selects (and orders) classes of
the file.  A class the file does not hold needs the text encoder.
"""
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from icar_dense.checkpoint import (load_checkpoint_file,
                                   save_checkpoint_file)
from .vocabulary import Vocabulary, load_vocabulary

__all__ = ['EmbeddingsFile', 'write_embeddings_file']


class EmbeddingsFile:
    """The rows of an embeddings file, checked and L2-normalised.

    Args:
        path (str): File written by :func:`write_embeddings_file`.
        embed_dim (int): The width the classifier expects.
    """

    def __init__(self, path: str, embed_dim: int) -> None:
        if not osp.isfile(path):
            raise FileNotFoundError(f'Embeddings file {path} does not exist.')
        data = load_checkpoint_file(path)
        if not isinstance(data, dict) or not {'class_names', 'embeddings'
                                              } <= set(data):
            keys = sorted(data) if isinstance(data, dict) else type(data)
            raise ValueError(
                f'Embeddings file {path} must hold a dict with "class_names" '
                f'and "embeddings" (see save_embeddings), got {keys}.')
        names, embeds = list(data['class_names']), data['embeddings']
        if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2:
            raise ValueError(f'Embeddings file {path}: "embeddings" must be a '
                             '(num_classes, dim) tensor.')
        if embeds.shape[0] != len(names):
            raise ValueError(
                f'Embeddings file {path}: {len(names)} class names but '
                f'{embeds.shape[0]} embeddings.')
        if embeds.shape[1] != embed_dim:
            raise ValueError(
                f'Embeddings file {path} holds {embeds.shape[1]}-d '
                f'embeddings but embed_dim is {embed_dim}.')
        if len(set(names)) != len(names):
            dups = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f'Embeddings file {path}: duplicate class names {dups[:10]}.')
        self.path = path
        self.names: List[str] = names
        self.embeddings = F.normalize(embeds.float(), dim=-1)
        self.meta: Dict[str, Any] = dict(data.get('meta') or {})
        self.meta.setdefault('templates', list(data.get('templates', [])))

    @property
    def templates(self) -> List[str]:
        return list(self.meta.get('templates', []))

    def select(self, vocabulary: Any) -> Tuple[Vocabulary, torch.Tensor]:
        """The vocabulary's classes (None: all) and their rows, (C, D)."""
        if vocabulary is None:
            names = list(self.names)
        else:
            names = load_vocabulary(vocabulary, descriptions=False).names
        index = {name: i for i, name in enumerate(self.names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(
                f'{len(unknown)} classes are not in the embeddings file '
                f'{self.path}: {unknown[:10]}. A new class needs '
                'the text encoder.')
        rows = torch.tensor([index[n] for n in names], dtype=torch.long)
        return Vocabulary(names, [], str(self.path)), self.embeddings[rows]


def write_embeddings_file(path: str,
                          class_names: Sequence[str],
                          embeddings: torch.Tensor,
                          templates: Sequence[str],
                          meta: Optional[Dict[str, Any]] = None) -> None:
    """Write class embeddings for ``TextClassifier(embeddings=path)``
    (atomically: a reader never sees half a file)."""
    meta = dict(meta or {})
    meta['templates'] = list(templates)
    save_checkpoint_file(
        dict(
            class_names=list(class_names),
            embeddings=embeddings.detach().float().cpu(),
            templates=list(templates),
            meta=meta), path)
