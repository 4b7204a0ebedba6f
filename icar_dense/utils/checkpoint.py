"""Safe checkpoint loading and the official iCAR checkpoint layout.

The authors' training code saves ``{'model', 'optimizer', 'epoch', 'scaler',
'args', ...}`` with ``args`` an ``argparse.Namespace``.
:func:`load_checkpoint_file` reads such a file with ``weights_only=True``
and ``argparse.Namespace`` allowed (it holds values, no code), keeps the
``model`` entry and names the skipped entries in one log line.

``model`` is one flat state dict with three prefixes:

* ``visual_model.backbone.*`` -- Swin in the original Swin-Transformer key
  names, with iCAR's own renames (``rel_pos_embed_table``,
  ``relative_coords``, ``.channel_reduction.``), the shift masks
  ``atten_mask_matrix`` and the absolute position embedding ``pos_embed``;
* ``visual_model.projector.weight`` -- the visual projection (256 x C);
* ``sentence_model.backbone.*`` -- RoBERTa in HuggingFace key names (with
  ``embeddings.position_ids`` and ``pooler.*`` from older transformers), and
  ``sentence_model.projector.weight`` -- the text projection (256 x 768).

:func:`convert_icar_state_dict` turns it into the layout our modules use
(``backbone.*`` in OpenMMLab Swin names, ``text_classifier.*``).  Buffers
the models rebuild and weights no downstream model uses are recognised by
:func:`classify_checkpoint_keys` and reported by every loader in one
"rebuilt / unused" log line (:func:`log_rebuilt_unused`), not as missing or
unexpected keys.
"""
import argparse
import contextlib
import logging
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

# What the authors' saver pickles besides tensors, numbers, strings and
# containers: ``args``, an argparse.Namespace.  Unpickling one creates the
# object and fills its ``__dict__``; no code of the file runs.
AUTHORS_SAFE_GLOBALS = (argparse.Namespace, )

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

_ANSI = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with what to do about it."""


def strip_ansi(text):
    """``text`` without terminal escape codes (torch colours its errors)."""
    return _ANSI.sub('', str(text))


@contextlib.contextmanager
def _authors_globals():
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is not None:
        with safe_globals(list(AUTHORS_SAFE_GLOBALS)):
            yield
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch 2.4: no context manager
        add(list(AUTHORS_SAFE_GLOBALS))
    yield


def _unsafe_globals(path):
    """The globals of ``path`` the safe loader refuses (best effort)."""
    lister = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                     None)
    if lister is None:
        return []
    try:
        with _authors_globals():
            return list(lister(path))
    except Exception:  # legacy (non-zip) files cannot be listed
        return []


def _refusal(path, err):
    lines = [strip_ansi(line).strip() for line in str(err).splitlines()]
    reason = next((line for line in lines if 'WeightsUnpickler error' in line),
                  next((line for line in lines if line), ''))
    reason = reason.replace('WeightsUnpickler error: ', '')
    reason = reason.split(' Please use `torch.serialization')[0]
    unsafe = _unsafe_globals(path)
    holds = (f'it pickles {", ".join(unsafe)}' if unsafe else
             'it contains objects that are not plain tensors/containers')
    return CheckpointError(
        f'refusing to load {path!r}: {holds}, which could run code when '
        f'unpickled ({reason}). Accepted besides tensors and containers: '
        'argparse.Namespace (the `args` of the iCAR authors\' checkpoints) '
        'and the types mmengine stores. If you trust the file, re-save its '
        'tensors once with `python tools/resave_trusted_checkpoint.py '
        f'{path} OUT.pth` (that script unpickles it fully) and use OUT.pth.')


def is_authors_training_file(checkpoint):
    """Whether ``checkpoint`` is a file as the iCAR authors' saver wrote it:
    a dict whose ``model`` entry is the flat iCAR state dict."""
    model = checkpoint.get('model') if isinstance(checkpoint, dict) else None
    return isinstance(model, dict) and any(
        isinstance(k, str) and k.startswith(ICAR_PREFIXES) for k in model)


def _describe_entry(key, value):
    kind = type(value).__name__
    return f'{key} ({kind})'


def keep_model_entry(checkpoint, source='checkpoint', logger='current'):
    """The authors' training file reduced to ``{'model': ...}``.

    Their saver also stores the training state (``optimizer``, ``epoch``,
    ``scaler``, ``args``, ...); none of it is needed to use the weights.
    One log line names the skipped entries.  Other checkpoints are returned
    unchanged.
    """
    if not is_authors_training_file(checkpoint) or len(checkpoint) == 1:
        return checkpoint
    skipped = [_describe_entry(k, v) for k, v in checkpoint.items()
               if k != 'model']
    from mmengine.logging import print_log
    print_log(
        f'{source}: an iCAR training checkpoint as the authors saved it: '
        f"using its 'model' entry; skipped {len(skipped)} top-level "
        f'entries (training state, not weights): {", ".join(skipped)}',
        logger=logger)
    return {'model': checkpoint['model']}


def load_checkpoint_file(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and a clear refusal.

    Only tensors, containers and the allow-listed types (``argparse.
    Namespace``, see :data:`AUTHORS_SAFE_GLOBALS`, and mmengine's types, see
    :mod:`icar_dense.compat`) are unpickled: a file that would run code is
    refused before anything executes, with a message (free of terminal
    escape codes) that names the file and the way to re-save it.  A file as
    the iCAR authors saved it comes back as ``{'model': ...}`` (see
    :func:`keep_model_entry`).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    try:
        with _authors_globals():
            checkpoint = torch.load(
                path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported operand' in str(err):
            # bytes that are no pickle opcode: text, JSON, an HTML page...
            raise CheckpointError(
                f'cannot read checkpoint {path!r}: not a torch file '
                '(no pickle data; a text or HTML file saved as .pth?)'
            ) from err
        raise _refusal(path, err) from err
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError) as err:
        # what the unpickler raises on bytes that are not a pickle
        raise CheckpointError(
            f'cannot read checkpoint {path!r} (truncated or not a torch '
            f'file?): {type(err).__name__}: {strip_ansi(err)}') from err
    return keep_model_entry(checkpoint, path)


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


def undo_icar_swin_renames(state_dict, rebuilt=None):
    """iCAR Swin keys -> original Swin-Transformer keys.

    The buffers ``relative_coords`` (``relative_position_index``) and
    ``atten_mask_matrix`` (``attn_mask``) are dropped: the model rebuilds
    them.  Their keys are appended to ``rebuilt`` when a list is given.
    """
    renamed = OrderedDict()
    for key, value in state_dict.items():
        if re.search(r'(^|\.)(relative_coords|relative_position_index|'
                     r'atten_mask_matrix|attn_mask)$', key):
            if rebuilt is not None:
                rebuilt.append(key)
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
        dict: ``swin`` (original Swin names, iCAR renames undone, with
        ``pos_embed`` when the file has it), ``visual_proj`` (Tensor or
        None), ``text`` (keys below ``sentence_model.``: ``backbone.*``
        RoBERTa, ``projector.weight``), ``rebuilt`` (the full keys of the
        dropped buffers and unused weights: ``relative_coords``,
        ``atten_mask_matrix``, RoBERTa ``position_ids`` and ``pooler.*``)
        and ``unexpected`` (keys outside the iCAR prefixes).
    """
    if detect_layout(state_dict, source) != 'icar':
        raise CheckpointError(f'{source}: not an official iCAR checkpoint')
    swin, text = OrderedDict(), OrderedDict()
    visual_proj = None
    unexpected, rebuilt, dropped_swin = [], [], []
    for key, value in state_dict.items():
        if key.startswith(ICAR_VISUAL_BACKBONE):
            swin[key[len(ICAR_VISUAL_BACKBONE):]] = value
        elif key == ICAR_VISUAL_PROJECTOR:
            visual_proj = value
        elif key.startswith(ICAR_TEXT):
            name = key[len(ICAR_TEXT):]
            if re.search(r'(^|\.)(embeddings\.position_ids$|pooler\.)', name):
                rebuilt.append(key)
            else:
                text[name] = value
        else:
            unexpected.append(key)
    swin = undo_icar_swin_renames(swin, dropped_swin)
    rebuilt = [ICAR_VISUAL_BACKBONE + k for k in dropped_swin] + rebuilt
    return dict(swin=swin, visual_proj=visual_proj, text=text,
                rebuilt=rebuilt, unexpected=unexpected)


def convert_icar_state_dict(state_dict, source='checkpoint', rebuilt=None):
    """Official iCAR state dict -> icar_dense layout.

    Args:
        state_dict (dict): ``model`` of the official file.
        source (str): Named in errors.
        rebuilt (list, optional): Receives the source keys of the buffers
            and unused weights that were dropped (see
            :func:`split_icar_state_dict`), for :func:`log_rebuilt_unused`.

    Returns:
        tuple[OrderedDict, list[str]]: the converted state dict with keys
        ``backbone.*`` (OpenMMLab Swin; ``backbone.pos_embed`` kept when the
        file has it: the backbone decides), ``text_classifier.visual_proj.
        weight`` and ``text_classifier.text_encoder.*``; and the source keys
        that were not recognised.
    """
    parts = split_icar_state_dict(state_dict, source)
    if rebuilt is not None:
        rebuilt.extend(parts['rebuilt'])
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
    """OpenMMLab Swin backbone weights from any supported layout.

    The Swin buffers of official iCAR and original Swin files
    (``relative_coords`` / ``relative_position_index``,
    ``atten_mask_matrix`` / ``attn_mask``) are dropped and named in one
    "rebuilt / unused" log line; ``pos_embed`` is kept for the backbone to
    use or drop.
    """
    layout = detect_layout(state_dict, source)
    if layout in ('icar', 'swin_official'):
        rebuilt = []
        if layout == 'icar':
            parts = split_icar_state_dict(state_dict, source)
            swin = parts['swin']
            rebuilt = [k for k in parts['rebuilt']
                       if k.startswith(ICAR_VISUAL_BACKBONE)]
        else:
            swin = OrderedDict()
            for key, value in state_dict.items():
                if key.startswith('backbone.'):
                    key = key[len('backbone.'):]
                if key.startswith('head.'):
                    continue
                swin[key] = value
            swin = undo_icar_swin_renames(swin, rebuilt)
        try:
            converted = swin_official_to_openmmlab(swin)
        except CheckpointError as err:
            raise CheckpointError(f'{source}: {err}') from None
        log_rebuilt_unused(source, rebuilt)
        return converted
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


def maps_icar_itself(model):
    """Whether ``model`` rewrites official iCAR state dicts while loading
    (``ICAREncoderDecoder``, ``ICARRecognizer3D``: their
    ``_load_from_state_dict`` maps the file, see their modules)."""
    return callable(getattr(type(model), '_map_icar_checkpoint', None))


def _fit_swin_for_backbone(backbone, swin, rebuilt, source):
    """Converted Swin weights (OpenMMLab names) ready for ``backbone``.

    Relative position tables are resized to the backbone's window (its own
    ``_fit_position_tables``); ``pos_embed`` becomes the absolute position
    embedding of a backbone with ``use_abs_pos_embed=True`` (its own
    ``_fit_abs_pos_embed``) and is listed in ``rebuilt`` otherwise.
    """
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    fit_tables = getattr(backbone, '_fit_position_tables', None)
    if fit_tables is not None:
        swin = fit_tables(swin, logger)
    fit_pos = getattr(backbone, '_fit_abs_pos_embed', None)
    if 'pos_embed' in swin and getattr(backbone, 'use_abs_pos_embed', False) \
            and fit_pos is not None:
        fit_pos(swin, source, logger)
    elif 'pos_embed' in swin:
        swin.pop('pos_embed')
        rebuilt.append(ICAR_VISUAL_BACKBONE + 'pos_embed')
    return swin


def fit_icar_checkpoint(model, checkpoint, source='checkpoint',
                        logger='current'):
    """Map an official iCAR file, in place, onto a model that does not read
    it itself (a detector, or any model built of our modules).

    The Swin goes to ``backbone.*`` (OpenMMLab names, tables resized to the
    backbone's window), the text tower and both projections to every text
    classifier of the model (``...text_classifier.*``; a visual projection of
    another width keeps its initialisation, see
    ``TextClassifier.fit_checkpoint_weights``).  Everything else of the model
    (neck, RPN, RoI heads, ...) is not in the file: the caller decides
    whether that is acceptable (``icar_dense.engine.checkpoint_check``).
    One line says what was mapped, one "rebuilt / unused" line lists the
    buffers and unused weights left out.

    Args:
        model (nn.Module): The (unwrapped) model the file is loaded into.
        checkpoint (dict): What ``load_checkpoint_file`` / mmengine's
            ``_load_checkpoint`` returned; rewritten to ``{'state_dict':
            ...}`` in the model's keys when it is an official iCAR file.
        source (str): The file, named in the log lines.

    Returns:
        bool: Whether the checkpoint was an official iCAR file and was
        rewritten.
    """
    if not isinstance(checkpoint, dict) or maps_icar_itself(model):
        return False
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict):
        return False
    official, _ = find_icar_state_dict(state, '')
    if official is None:
        return False
    rebuilt, notes = [], []
    converted, unknown = convert_icar_state_dict(official, source, rebuilt)
    mapped = OrderedDict()
    swin = OrderedDict((k[len('backbone.'):], v) for k, v in converted.items()
                       if k.startswith('backbone.'))
    backbone = getattr(model, 'backbone', None)
    parts = []
    if swin and isinstance(backbone, torch.nn.Module):
        swin = _fit_swin_for_backbone(backbone, swin, rebuilt, source)
        for key, value in swin.items():
            mapped['backbone.' + key] = value
        for name, buffer in backbone.named_buffers():
            # rebuilt from the window size: the model's own, so that no
            # loader reports them missing
            if name.endswith('relative_position_index'):
                mapped['backbone.' + name] = buffer.detach().clone()
        parts.append(f'its Swin to backbone.* ({len(swin)} tensors)')
    elif swin:
        notes.append(f'{type(model).__name__} has no backbone: the Swin '
                     'is not used')
    text = OrderedDict(
        (k[len('text_classifier.'):], v) for k, v in converted.items()
        if k.startswith('text_classifier.'))
    for name, module in model.named_modules():
        if not text or not callable(
                getattr(module, 'fit_checkpoint_weights', None)):
            continue
        kept, fit_notes = module.fit_checkpoint_weights(text)
        owned = module.state_dict()
        kept = {k: v for k, v in kept.items() if k in owned}
        for key, value in kept.items():
            mapped[f'{name}.{key}' if name else key] = value
        parts.append(f'its text tower and projections to {name or "model"}.'
                     f'* ({len(kept)} tensors)')
        notes += [f'{name}: {note}' for note in fit_notes]
    if not parts:
        notes.append('the model has no backbone and no text classifier to '
                     'take them')
    if unknown:
        notes.append(f'unrecognised keys {unknown[:5]}')
    for key in list(checkpoint):
        del checkpoint[key]
    checkpoint['state_dict'] = mapped
    from mmengine.logging import print_log
    print_log(
        f'{source}: an official iCAR checkpoint given to '
        f'{type(model).__name__}: mapped {"; ".join(parts) or "nothing"}'
        f'{"; " + "; ".join(notes) if notes else ""}',
        logger=logger)
    log_rebuilt_unused(source, list(dict.fromkeys(rebuilt)), logger=logger)
    return True
