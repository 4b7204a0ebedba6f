"""Which layout a state dict has, and where the weights sit in a file.

Three layouts are known (:func:`detect_layout`):

* ``'icar'`` -- the authors' file: one flat state dict with the prefixes
  ``visual_model.backbone.`` (Swin in original names with iCAR's renames),
  ``visual_model.projector.weight`` and ``sentence_model.`` (RoBERTa in
  HuggingFace names and ``projector.weight``);
* ``'swin_official'`` -- the original Swin-Transformer names
  (``layers.N.blocks...``);
* ``'openmmlab'`` -- mmdet/mmseg ``SwinTransformer`` names
  (``stages.N...``, ``patch_embed.projection``), our own checkpoints.
"""
from collections import OrderedDict

from .errors import CheckpointError

# Prefixes of the official iCAR checkpoint.
ICAR_VISUAL_BACKBONE = 'visual_model.backbone.'
ICAR_VISUAL_PROJECTOR = 'visual_model.projector.weight'
ICAR_TEXT = 'sentence_model.'

ICAR_PREFIXES = ('visual_model.', 'sentence_model.')


def is_authors_training_file(checkpoint):
    """Whether ``checkpoint`` is a file as the iCAR authors' saver wrote it:
    a dict whose ``model`` entry is the flat iCAR state dict."""
    model = checkpoint.get('model') if isinstance(checkpoint, dict) else None
    return isinstance(model, dict) and any(
        isinstance(k, str) and k.startswith(ICAR_PREFIXES) for k in model)


def unwrap_state_dict(checkpoint, source='checkpoint'):
    """The flat state dict inside a checkpoint (``state_dict``/``model``)."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'{source}: expected a dict, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    return checkpoint


def detect_layout(state_dict, source='checkpoint'):
    """One of ``'icar'``, ``'swin_official'``, ``'openmmlab'``.

    Raises:
        CheckpointError: keys match none of the known layouts; the message
            lists a few of them.
    """
    keys = list(state_dict.keys())
    if any(k.startswith((ICAR_VISUAL_BACKBONE, ICAR_TEXT)) for k in keys):
        return 'icar'
    stripped = [k[len('backbone.'):] if k.startswith('backbone.') else k
                for k in keys]
    if any(k.startswith('stages.') or k.startswith('patch_embed.projection')
           for k in stripped):
        return 'openmmlab'
    if any(k.startswith('layers.') and '.blocks.' in k for k in stripped):
        return 'swin_official'
    raise CheckpointError(
        f'{source}: unknown checkpoint layout. Expected an official iCAR '
        f'checkpoint (keys starting with {ICAR_VISUAL_BACKBONE!r} / '
        f'{ICAR_TEXT!r}), an original Swin-Transformer checkpoint '
        "('layers.N.blocks...') or an OpenMMLab one ('backbone.stages...'); "
        f'first keys: {keys[:5]}')


def find_icar_state_dict(state_dict, prefix):
    """An official iCAR state dict handed to a whole model's loader.

    mmengine gives ``_load_from_state_dict`` the keys below ``prefix``; an
    official file loaded as-is arrives as ``prefix + 'model'`` (its nested
    dict), a flattened one as ``prefix + 'visual_model.*'`` etc.

    Returns:
        tuple: ``(official, consumed)`` -- the iCAR state dict (or None) and
        the keys of ``state_dict`` it came from.
    """
    ours = [k for k in state_dict if k.startswith(prefix)]
    rel = OrderedDict((k[len(prefix):], k) for k in ours)
    nested = state_dict.get(prefix + 'model')
    if isinstance(nested, dict) and any(
            k.startswith(ICAR_PREFIXES) for k in nested):
        return nested, list(ours)  # {'model': {...}, 'epoch': ...}
    consumed = [k for r, k in rel.items() if r.startswith(ICAR_PREFIXES)]
    if not consumed:
        return None, []
    official = OrderedDict((r, state_dict[k]) for r, k in rel.items()
                           if r.startswith(ICAR_PREFIXES))
    return official, consumed
