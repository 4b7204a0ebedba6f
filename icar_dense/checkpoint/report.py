"""What a loader says about keys it did not load.

Buffers the models rebuild and weights no downstream model uses are
recognised here (:data:`REBUILT_UNUSED`) and reported by every loader in
one "rebuilt / unused" log line (:func:`log_rebuilt_unused`), not as
missing or unexpected keys; :func:`stage_norm_note` explains the per-stage
norms of OpenMMLab's Swin that no original Swin checkpoint has.
"""
import logging
import re
from collections import OrderedDict

# Keys that are not weights to load, and why (group, pattern, reason).
# Buffers are rebuilt by the models; the other entries no downstream model
# uses.  ``pos_embed`` is listed only where the receiving model drops it.
REBUILT_UNUSED = (
    ('relative_coords',
     re.compile(r'(^|\.)(relative_coords|relative_position_index)$'),
     'relative position index buffers, rebuilt from the window size'),
    ('atten_mask_matrix', re.compile(r'(^|\.)(atten_mask_matrix|attn_mask)$'),
     'shifted-window attention masks, rebuilt for the input size'),
    ('pos_embed', re.compile(r'(^|\.)pos_embed$'),
     'absolute position embedding of the 224 px pre-training, not used by '
     'this model (dense inputs; the authors\' downstream code drops it too)'),
    ('position_ids', re.compile(r'(^|\.)embeddings\.position_ids$'),
     'RoBERTa position ids buffer of older transformers, rebuilt'),
    ('pooler', re.compile(r'(^|\.)pooler\.'),
     'RoBERTa pooling layer, unused: the text feature is the mean of the '
     'token features'),
)
# Per-stage output norms of OpenMMLab's Swin that the original Swin lacks.
STAGE_NORM_NOTE = (
    'OpenMMLab\'s Swin has a LayerNorm per output stage (out_indices) where '
    'the original Swin has only the final one (loaded as norm{last}): '
    'norm0..norm{last_but_one} are not in the checkpoint and start as '
    'identity (weight 1, bias 0), learned in fine-tuning, as with any Swin '
    'checkpoint in mmdet/mmseg')


def is_rebuilt_or_unused(key):
    """Whether ``key`` belongs to one of the :data:`REBUILT_UNUSED` groups."""
    return any(pattern.search(key) for _, pattern, _ in REBUILT_UNUSED)


def classify_checkpoint_keys(keys):
    """Sort checkpoint keys into the recognised rebuilt / unused groups.

    Args:
        keys (Iterable[str]): Keys a loader did not load (dropped,
            unexpected or, for rebuilt buffers, missing).

    Returns:
        tuple[OrderedDict, list[str]]: ``{group: [keys]}`` for the keys of
        :data:`REBUILT_UNUSED`, and the other keys in their order.
    """
    groups, rest = OrderedDict(), []
    for key in keys:
        for group, pattern, _ in REBUILT_UNUSED:
            if pattern.search(key):
                groups.setdefault(group, []).append(key)
                break
        else:
            rest.append(key)
    return groups, rest


def describe_rebuilt_unused(keys):
    """What the "rebuilt / unused" line says about ``keys`` (None if none is
    recognised), and the keys that are not recognised."""
    groups, rest = classify_checkpoint_keys(keys)
    if not groups:
        return None, rest
    reasons = {group: reason for group, _, reason in REBUILT_UNUSED}
    parts = []
    for group, found in groups.items():
        example = found[0] if len(found) == 1 else f'e.g. {found[0]}'
        parts.append(f'{len(found)} x {group} ({reasons[group]}; {example})')
    return '; '.join(parts), rest


def log_rebuilt_unused(source, keys, logger='current'):
    """Log the recognised ``keys`` in one line; return the others.

    Every loader of the official layout sends what it did not load through
    this function, so the authors' buffers (``relative_coords``,
    ``atten_mask_matrix``), a dropped ``pos_embed`` and RoBERTa's
    ``position_ids`` / ``pooler.*`` never show up as missing or unexpected.
    """
    body, rest = describe_rebuilt_unused(keys)
    if body is not None:
        from mmengine.logging import print_log
        print_log(f'{source}: rebuilt / unused, not loaded: {body}',
                  logger=logger, level=logging.INFO)
    return rest


def stage_norm_keys(keys):
    """The keys of ``norm0..norm(N-2)`` (OpenMMLab Swin's per-stage output
    norms absent from original/iCAR checkpoints) among ``keys``."""
    return [k for k in keys
            if re.match(r'^(.*backbone\.)?norm\d+\.(weight|bias)$', k)]


def stage_norm_note(num_stages):
    """One sentence on the per-stage norms a conversion leaves initialised."""
    return STAGE_NORM_NOTE.format(last_but_one=num_stages - 2,
                                  last=num_stages - 1)
