# Copyright (c) icar_dense contributors. All rights reserved.
"""Fingerprints and the on-disk cache of text embeddings.

Encoding LVIS (1203 classes x 80 templates) with RoBERTa-base takes minutes on
a CPU; the cache makes every evaluation after the first one load a small file
instead.  The key is a sha256 over everything the embeddings depend on: the
text-encoder weights, its type, tokenizer and maximum length, the class names,
descriptions, templates and resulting prompts.  Any change gives a new file,
so a stale entry is never read.
"""
import hashlib
import json
import logging
import os.path as osp
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from mmengine.logging import print_log

from icar_dense.checkpoint import (load_checkpoint_file,
                                   save_checkpoint_file)

__all__ = [
    'state_dict_fingerprint', 'file_fingerprint',
    'json_fingerprint', 'EmbeddingDiskCache'
]


def _update_with_tensor(h: 'hashlib._Hash', tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    h.update(f'{tuple(tensor.shape)}|{tensor.dtype}|'.encode())
    # Hash the raw bytes: viewing as uint8 works for every dtype (bfloat16
    # has no numpy equivalent) and avoids a copy for CPU tensors.
    data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8)
    h.update(memoryview(data.numpy()))


def state_dict_fingerprint(
        named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """sha256 of named tensors (parameters and buffers), order independent.

    Args:
        named_tensors (Iterable[tuple[str, Tensor]]): e.g.
            ``module.state_dict().items()``.

    Returns:
        str: Hex digest.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda kv: kv[0]):
        h.update(name.encode() + b'\0')
        _update_with_tensor(h, tensor)
    return h.hexdigest()


def file_fingerprint(path: str) -> str:
    """sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def json_fingerprint(obj: Any) -> str:
    """sha256 of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


class EmbeddingDiskCache:
    """Text embeddings stored as ``<cache_dir>/<kind>-<key>.pth``.

    Args:
        cache_dir (str): Folder of the cache files (created on first write).
    """

    def __init__(self, cache_dir: str) -> None:
        self.cache_dir = osp.expanduser(cache_dir)

    def path(self, key: str, kind: str) -> str:
        return osp.join(self.cache_dir, f'{kind}-{key}.pth')

    def load(self, key: str, kind: str,
             shape: Tuple[int, int]) -> Optional[torch.Tensor]:
        """The cached embeddings, or None on a miss or an unusable file.

        Args:
            key (str): Cache key (hex digest).
            kind (str): ``'class'`` or ``'prompt'`` embeddings.
            shape (tuple[int, int]): Expected shape; a file whose tensor has
                another shape is ignored.

        Returns:
            torch.Tensor | None: The embeddings on the CPU.
        """
        path = self.path(key, kind)
        if not osp.isfile(path):
            return None
        try:
            data = load_checkpoint_file(path)
            embeds = data['embeddings']
            ok = (
                data.get('key') == key and isinstance(embeds, torch.Tensor)
                and tuple(embeds.shape) == tuple(shape))
        except Exception as e:  # a truncated or foreign file is a miss
            print_log(
                f'Ignoring unreadable text-embedding cache {path}: {e}',
                logger='current',
                level=logging.WARNING)
            return None
        if not ok:
            print_log(
                f'Ignoring text-embedding cache {path}: its key or shape '
                f'does not match (expected {tuple(shape)}).',
                logger='current',
                level=logging.WARNING)
            return None
        return embeds.float()

    def save(self,
             key: str,
             kind: str,
             embeddings: torch.Tensor,
             meta: Optional[Dict[str, Any]] = None) -> str:
        """Write embeddings atomically and return the file path."""
        path = self.path(key, kind)
        # written to a temporary file and renamed: a reader (another rank, a
        # concurrent job) never sees a half-written entry
        save_checkpoint_file(
            dict(
                key=key,
                embeddings=embeddings.detach().float().cpu().contiguous(),
                meta=meta or {}), path)
        return path
