"""Semantic segmentation (mmseg): a fixed budget of pixels per image."""
import contextlib
import zlib
from typing import Optional

import torch
from mmengine.logging import print_log

from ..checks import check_choice, check_optional_int
from .base import INMAP_COLLECTORS, BaseFeatureCollector

__all__ = ['PixelCollector', 'sample_pixels']


def sample_pixels(num: int,
                  k: int,
                  generator: torch.Generator,
                  labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pick ``k`` of ``num`` positions, sorted, without replacement.

    Args:
        num (int): Number of positions.
        k (int): Number to pick (all when ``k >= num``).
        generator (torch.Generator): CPU generator (fixes the choice).
        labels (Tensor, optional): ``(num,)`` non-negative class per
            position: stratified sampling, round-robin over the classes in
            a random order (every class present gets ``min(count, ~k /
            classes)`` positions, the remainder goes to the larger ones).
            None: uniform.

    Returns:
        Tensor: ``(min(k, num),)`` int64 indices (CPU), ascending.
    """
    if k >= num:
        return torch.arange(num)
    perm = torch.randperm(num, generator=generator)
    if labels is None:
        return perm[:k].sort().values
    cls = labels.reshape(-1).long().cpu()[perm]
    # rank of every (permuted) position within its class
    order = torch.argsort(cls, stable=True)
    counts = torch.bincount(cls)
    offsets = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num) - offsets[cls[order]]
    pick = torch.argsort(rank, stable=True)[:k]
    return perm[pick].sort().values


@INMAP_COLLECTORS.register_module(name='pixel')
class PixelCollector(BaseFeatureCollector):
    """``pixels_per_image`` positions of the decode-head feature maps.

    Every image contributes at most ``pixels_per_image`` pixels, over all
    its sliding windows and test-time augmentations, chosen with a seed per
    image file (so 1 and N processes, batch 1 and batch N, pool the same
    pixels).

    Options:
        pixels_per_image (int): Pixels per image. Default 256.
        pixel_sampling (str): ``'stratified'`` by the predicted class
            (round-robin over the classes present, so small classes are not
            drowned by wall and sky; default) or ``'uniform'``.
    """

    default_scope = 'mmseg'
    options = dict(pixels_per_image=256, pixel_sampling='stratified')
    imbalanced = True

    @classmethod
    def check_options(cls, options):
        check_optional_int('pixels_per_image', options['pixels_per_image'], 1)
        check_choice('pixel_sampling', options['pixel_sampling'],
                     ('stratified', 'uniform'))

    def start_batch(self, data_batch) -> None:
        super().start_batch(data_batch)
        # (classifier, row of the call) -> calls so far in this batch: a
        # new seed for each sliding window of an image
        self._calls = {}

    @contextlib.contextmanager
    def text_pass(self, model):
        """The dense mmseg path for the text pass.

        The exact large-vocabulary argmax of ``ICAREncoderDecoder`` never
        calls the classifier's forward, which is where the pixels are
        pooled; it is used again for the InMaP passes.
        """
        large_vocab = getattr(model, 'large_vocab', None)
        if getattr(model, 'uses_large_vocab_path', lambda: False)():
            print_log(
                'InMaPTestLoop: the text pass uses the dense segmentation '
                'path (mmseg logits) to pool pixel embeddings; the '
                'large-vocabulary argmax is used again for the InMaP pass',
                logger='current')
            model.large_vocab = None
        try:
            yield
        finally:
            if large_vocab is not None:
                model.large_vocab = large_vocab

    def select(self, name, module, feats, logits):
        if feats.dim() < 3:  # not a feature map: every row
            return self.embed_rows(module, feats)
        num = feats.shape[0]
        flat = feats.reshape(num, -1, feats.shape[-1])
        labels = (
            logits.reshape(num, -1, logits.shape[-1]).argmax(-1)
            if self.pixel_sampling == 'stratified' else None)
        batch = self._batch_size or 1
        embeds, ids, picked = [], [], []
        for n in range(num):
            sample = n % batch if num % batch == 0 else 0
            call = self._calls.get((name, n), 0)
            self._calls[(name, n)] = call + 1
            seed = zlib.crc32(
                f'{self.seed}|{self.sample_key(sample)}|{call}'.encode())
            generator = torch.Generator().manual_seed(seed)
            index = sample_pixels(flat.shape[1], self.pixels_per_image,
                                  generator,
                                  None if labels is None else labels[n])
            embeds.append(module.embed_visual(flat[n, index.to(flat.device)]))
            ids.append(torch.full((index.numel(), ), sample, dtype=torch.long))
            if labels is not None:
                picked.append(labels[n][index.to(labels.device)])
        return (torch.cat(embeds), torch.cat(ids),
                torch.cat(picked) if picked else None)

    def reduce(self, index, parts, feats):
        """At most ``pixels_per_image`` of an image's pixels (several calls
        per image: sliding windows, test-time augmentation)."""
        if feats.shape[0] <= self.pixels_per_image:
            return feats
        labels = (
            torch.cat([p[1] for p in parts])
            if self.pixel_sampling == 'stratified' else None)
        seed = zlib.crc32(
            f'{self.seed}|{self.sample_key(index)}|image'.encode())
        keep = sample_pixels(feats.shape[0], self.pixels_per_image,
                             torch.Generator().manual_seed(seed), labels)
        return feats[keep]
