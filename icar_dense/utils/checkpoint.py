"""Safe checkpoint loading and the official iCAR checkpoint layout.

The official iCAR release stores ``torch.load(path)['model']`` as one flat
state dict with three prefixes:

* ``visual_model.backbone.*`` -- Swin in the original Swin-Transformer key
  names, with iCAR's own renames (``rel_pos_embed_table``,
  ``relative_coords``, ``.channel_reduction.``);
* ``visual_model.projector.weight`` -- the visual projection (256 x C);
* ``sentence_model.backbone.*`` -- RoBERTa in HuggingFace key names, and
  ``sentence_model.projector.weight`` -- the text projection (256 x 768).

:func:`convert_icar_state_dict` turns it into the layout our modules use
(``backbone.*`` in OpenMMLab Swin names, ``text_classifier.*``).
"""
import os.path as osp
import pickle
import re
from collections import OrderedDict

import torch

# Prefixes of the official iCAR checkpoint.
ICAR_VISUAL_BACKBONE = 'visual_model.backbone.'
ICAR_VISUAL_PROJECTOR = 'visual_model.projector.weight'
ICAR_TEXT = 'sentence_model.'

ICAR_PREFIXES = ('visual_model.', 'sentence_model.')
# keys old transformers releases saved that RobertaModel no longer has
LEGACY_TEXT_KEYS = ('text_encoder.backbone.embeddings.position_ids',
                    'text_encoder.backbone.pooler.')

# iCAR's renames of original Swin-Transformer keys.
_ICAR_SWIN_RENAMES = (
    ('rel_pos_embed_table', 'relative_position_bias_table'),
    ('.channel_reduction.', '.reduction.'),
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with what to do about it."""


def load_checkpoint_file(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and a clear refusal.

    Only tensors, containers and the allow-listed types (see
    :mod:`icar_dense.compat`) are unpickled: a file that would run code is
    refused before anything executes.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported operand' in str(err):
            # bytes that are no pickle opcode: text, JSON, an HTML page...
            raise CheckpointError(
                f'cannot read checkpoint {path!r}: not a torch file '
                '(no pickle data; a text or HTML file saved as .pth?)'
            ) from err
        raise CheckpointError(
            f'refusing to load {path!r}: it contains objects that are not '
            f'plain tensors/containers and could run code when unpickled '
            f'({str(err).splitlines()[0]}). If you trust the file, re-save '
            'its tensors once with `python tools/resave_trusted_checkpoint.py '
            f'{path} OUT.pth` (that script unpickles it fully) and use '
            'OUT.pth.') from err
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError) as err:
        # what the unpickler raises on bytes that are not a pickle
        raise CheckpointError(
            f'cannot read checkpoint {path!r} (truncated or not a torch '
            f'file?): {type(err).__name__}: {err}') from err


def save_checkpoint_file(obj, path):
    """``torch.save`` to a temporary file, then rename: never half-written."""
    import io

    from icar_dense.engine.safety import atomic_write
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(buffer.getvalue(), path)


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


def undo_icar_swin_renames(state_dict):
    """iCAR Swin keys -> original Swin-Transformer keys.

    ``relative_coords`` buffers are dropped: the relative position index is
    rebuilt by the model.
    """
    renamed = OrderedDict()
    for key, value in state_dict.items():
        if key.endswith('relative_coords') or key.endswith(
                'relative_position_index') or key.endswith('attn_mask'):
            continue
        for old, new in _ICAR_SWIN_RENAMES:
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def swin_official_to_openmmlab(state_dict):
    """Original Swin-Transformer names -> mmdet/mmseg ``SwinTransformer``.

    Uses mmdet's own converter (stages, w_msa, ffn, patch-merging channel
    order); the final ``norm`` becomes ``norm3``, the output norm of the last
    stage in the OpenMMLab model.
    """
    from mmdet.models.backbones.swin import swin_converter
    stage_ids = [
        int(m.group(1)) for m in (re.match(r'layers\.(\d+)\.', k)
                                  for k in state_dict) if m
    ]
    if not stage_ids:
        raise CheckpointError(
            'no Swin stage weights (layers.N.* keys) to convert; found e.g. '
            f'{list(state_dict)[:3]}: is it a text-only checkpoint?')
    num_stages = 1 + max(stage_ids)
    converted = swin_converter(state_dict)
    result = OrderedDict()
    for key, value in converted.items():
        key = key[len('backbone.'):]
        if key.startswith('norm.'):
            key = f'norm{num_stages - 1}.' + key[len('norm.'):]
        result[key] = value
    return result


def split_icar_state_dict(state_dict, source='checkpoint'):
    """Split an official iCAR state dict into its three parts.

    Returns:
        dict: ``swin`` (original Swin names, iCAR renames undone),
        ``visual_proj`` (Tensor or None), ``text`` (keys below
        ``sentence_model.``: ``backbone.*`` RoBERTa, ``projector.weight``).
    """
    if detect_layout(state_dict, source) != 'icar':
        raise CheckpointError(f'{source}: not an official iCAR checkpoint')
    swin, text = OrderedDict(), OrderedDict()
    visual_proj = None
    unexpected = []
    for key, value in state_dict.items():
        if key.startswith(ICAR_VISUAL_BACKBONE):
            swin[key[len(ICAR_VISUAL_BACKBONE):]] = value
        elif key == ICAR_VISUAL_PROJECTOR:
            visual_proj = value
        elif key.startswith(ICAR_TEXT):
            text[key[len(ICAR_TEXT):]] = value
        else:
            unexpected.append(key)
    return dict(swin=undo_icar_swin_renames(swin), visual_proj=visual_proj,
                text=text, unexpected=unexpected)


def convert_icar_state_dict(state_dict, source='checkpoint'):
    """Official iCAR state dict -> icar_dense layout.

    Returns:
        tuple[OrderedDict, list[str]]: the converted state dict with keys
        ``backbone.*`` (OpenMMLab Swin), ``text_classifier.visual_proj.weight``
        and ``text_classifier.text_encoder.*``; and the source keys that were
        not recognised.
    """
    parts = split_icar_state_dict(state_dict, source)
    converted = OrderedDict()
    if parts['swin']:
        for key, value in swin_official_to_openmmlab(parts['swin']).items():
            converted['backbone.' + key] = value
    if parts['visual_proj'] is not None:
        converted['text_classifier.visual_proj.weight'] = parts['visual_proj']
    for key, value in parts['text'].items():
        converted['text_classifier.text_encoder.' + key] = value
    return converted, parts['unexpected']


def backbone_state_dict(state_dict, source='checkpoint'):
    """OpenMMLab Swin backbone weights from any supported layout."""
    layout = detect_layout(state_dict, source)
    if layout in ('icar', 'swin_official'):
        if layout == 'icar':
            swin = split_icar_state_dict(state_dict, source)['swin']
        else:
            swin = OrderedDict(
                (k[len('backbone.'):] if k.startswith('backbone.') else k, v)
                for k, v in state_dict.items())
            swin = OrderedDict((k, v) for k, v in swin.items()
                               if not k.startswith('head.'))
        try:
            return swin_official_to_openmmlab(swin)
        except CheckpointError as err:
            raise CheckpointError(f'{source}: {err}') from None
    result = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith('backbone.'):
            result[key[len('backbone.'):]] = value
    if not result:  # a bare backbone state dict
        result = OrderedDict(state_dict)
    return result


def infer_swin_arch(swin_state_dict):
    """Swin hyper-parameters read off an OpenMMLab-layout state dict.

    Returns:
        dict: ``embed_dims``, ``depths``, ``num_heads``, ``window_size``.
    """
    sd = swin_state_dict
    if 'patch_embed.projection.weight' not in sd:
        raise CheckpointError('cannot infer the Swin architecture: no '
                              "'patch_embed.projection.weight' key")
    embed_dims = sd['patch_embed.projection.weight'].shape[0]
    depths, heads = [], []
    window = None
    stage = 0
    while any(k.startswith(f'stages.{stage}.') for k in sd):
        blocks = {int(m.group(1)) for m in (
            re.match(rf'stages\.{stage}\.blocks\.(\d+)\.', k) for k in sd)
            if m}
        depths.append(len(blocks))
        table = sd[f'stages.{stage}.blocks.0.attn.w_msa.'
                   'relative_position_bias_table']
        heads.append(table.shape[1])
        window = (int(round(table.shape[0]**0.5)) + 1) // 2
        stage += 1
    return dict(embed_dims=int(embed_dims), depths=tuple(depths),
                num_heads=tuple(heads), window_size=int(window))


def infer_roberta_config(text_state_dict, prefix='backbone.'):
    """``transformers.RobertaConfig`` kwargs read off RoBERTa weights."""
    sd = {k[len(prefix):]: v for k, v in text_state_dict.items()
          if k.startswith(prefix)}
    try:
        vocab, hidden = sd['embeddings.word_embeddings.weight'].shape
        positions = sd['embeddings.position_embeddings.weight'].shape[0]
        type_vocab = sd['embeddings.token_type_embeddings.weight'].shape[0]
        intermediate = sd['encoder.layer.0.intermediate.dense.weight'].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f'RoBERTa weights lack {err.args[0]!r}: not a HuggingFace '
            'RobertaModel state dict') from err
    layers = 1 + max(int(m.group(1)) for m in (
        re.match(r'encoder\.layer\.(\d+)\.', k) for k in sd) if m)
    return dict(vocab_size=int(vocab), hidden_size=int(hidden),
                num_hidden_layers=int(layers),
                num_attention_heads=max(1, int(hidden) // 64),
                intermediate_size=int(intermediate),
                max_position_embeddings=int(positions),
                type_vocab_size=int(type_vocab))


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
