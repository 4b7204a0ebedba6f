"""An official iCAR file mapped onto a whole model (timm-style filters).

Every way a file reaches a model -- ``load_from``, ``tools/test.py CONFIG
CKPT``, the demos, mmaction's ``init_recognizer`` -- ends in the model's
``load_state_dict``; these functions rewrite an iCAR state dict, in place,
into the model's keys before that:

* :class:`ICARCheckpointMixin` -- for models that read the file themselves
  (``ICAREncoderDecoder``, ``ICARRecognizer3D``): their
  ``_load_from_state_dict`` runs the class's ``icar_checkpoint_filter``,
  :func:`map_icar_to_segmentor` or :func:`map_icar_to_recognizer`;
* :func:`fit_icar_checkpoint` -- for any other model built of our modules
  (a detector given the file as ``load_from``), called on the file's content
  by :mod:`icar_dense.engine.checkpoint_check`.

The text tower and the projections go to the model's text classifiers
through their ``fit_checkpoint_weights`` (see
:func:`~icar_dense.checkpoint.text.fit_text_classifier_state`); what is not
loaded is named in one "rebuilt / unused" line.
"""
import logging
from collections import OrderedDict

import torch

from .errors import CheckpointError
from .icar import convert_icar_state_dict, split_icar_state_dict
from .layout import ICAR_VISUAL_BACKBONE, find_icar_state_dict
from .report import (is_rebuilt_or_unused, log_rebuilt_unused,
                     stage_norm_keys, stage_norm_note)
from .swin import fit_position_tables


def _print_log(msg, logger='current', level=logging.INFO):
    from mmengine.logging import print_log
    print_log(msg, logger=logger, level=level)


def _text_to_classifier(classifier, text, rebuilt, state_dict, target,
                        no_classifier):
    """Put the fitting text weights under ``target``; return the notes."""
    if classifier is None:
        return [no_classifier]
    kept, notes = classifier.fit_checkpoint_weights(text, rebuilt)
    for key, value in kept.items():
        state_dict[target + key] = value
    return notes


def _joined(notes):
    return f'{"; " + "; ".join(notes) if notes else ""}'


def _own_index_buffers(module, names=None, exclude=()):
    """``{name: buffer clone}`` of ``module``'s ``relative_position_index``
    buffers (among ``names`` if given), rebuilt from the window: kept so
    that no loader reports them missing."""
    return OrderedDict(
        (name, buffer.detach().clone())
        for name, buffer in module.named_buffers()
        if name.endswith('relative_position_index')
        and (names is None or name in names) and name not in exclude)


class ICARCheckpointMixin:
    """Reads an official iCAR state dict handed to the model's loader.

    A subclass of an OpenMMLab model sets ``icar_checkpoint_filter`` to a
    function ``(model, state_dict, prefix)`` that rewrites ``state_dict`` in
    place (see :func:`map_icar_to_segmentor`, :func:`map_icar_to_recognizer`).
    :func:`maps_icar_itself` tells such models apart, so that
    :func:`fit_icar_checkpoint` leaves their files to them.
    """

    icar_checkpoint_filter = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._map_icar_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _map_icar_checkpoint(self, state_dict, prefix: str) -> None:
        """Rewrite an iCAR-layout state dict in place into ours."""
        type(self).icar_checkpoint_filter(self, state_dict, prefix)


def maps_icar_itself(model):
    """Whether ``model`` rewrites official iCAR state dicts while loading
    (``ICAREncoderDecoder``, ``ICARRecognizer3D``: their
    ``_load_from_state_dict`` maps the file, see
    :class:`ICARCheckpointMixin`)."""
    return callable(getattr(type(model), '_map_icar_checkpoint', None))


# ----------------------------------------------------------------------------
# segmentor
# ----------------------------------------------------------------------------
def map_icar_to_segmentor(model, state_dict, prefix: str) -> None:
    """An iCAR state dict -> ``backbone.*``, ``decode_head.text_classifier.*``.

    Reads an official file or a ``tools/convert_icar.py`` output.  Buffers
    the model rebuilds and weights it does not use (the authors'
    ``relative_coords`` / ``atten_mask_matrix``, a ``pos_embed`` the
    backbone has no place for, RoBERTa's ``position_ids`` / ``pooler.*``)
    are named in one "rebuilt / unused" line; the model's own
    ``relative_position_index`` buffers are kept (so mmengine does not list
    them as missing).
    """
    name = type(model).__name__
    official, consumed = find_icar_state_dict(state_dict, prefix)
    rel = OrderedDict((k[len(prefix):], k) for k in state_dict
                      if k.startswith(prefix))
    rebuilt = []
    if official is not None:
        converted, unknown = convert_icar_state_dict(
            official, 'iCAR checkpoint', rebuilt)
        for key in consumed:
            state_dict.pop(key)
        layout = 'official iCAR'
    elif any(r.startswith('text_classifier.') for r in rel):
        # tools/convert_icar.py output
        converted = OrderedDict(
            (r, state_dict.pop(k)) for r, k in rel.items()
            if r.startswith(('text_classifier.', 'backbone.')))
        unknown = []
        layout = 'converted iCAR'
    else:
        return
    own_keys = set(model.state_dict().keys())
    text = OrderedDict()
    for key, value in converted.items():
        if key.startswith('text_classifier.'):
            text[key[len('text_classifier.'):]] = value
        elif key.startswith('backbone.') and key not in own_keys and \
                is_rebuilt_or_unused(key):
            rebuilt.append(key)  # e.g. a pos_embed the backbone drops
        else:
            state_dict[prefix + key] = value
    notes = _text_to_classifier(
        getattr(model.decode_head, 'text_classifier', None), text, rebuilt,
        state_dict, prefix + 'decode_head.text_classifier.',
        'the decode head has no text_classifier: text weights ignored')
    present = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
    for key, value in _own_index_buffers(model, own_keys, present).items():
        state_dict[prefix + key] = value
    norms = stage_norm_keys(
        k for k in own_keys
        if k.startswith('backbone.') and k not in converted)
    if norms and any(k.startswith('backbone.') for k in converted):
        # norm0..norm(N-2) are missing: N stages
        last = max(int(k.split('norm')[-1].split('.')[0]) for k in norms)
        notes.append(stage_norm_note(last + 2))
    if unknown:
        notes.append(f'unrecognised keys {unknown[:5]}')
    _print_log(f'{name}: reading a checkpoint in the {layout} '
               f'layout{_joined(notes)}')
    log_rebuilt_unused(f'{name} ({layout} checkpoint)', rebuilt)


# ----------------------------------------------------------------------------
# recognizer
# ----------------------------------------------------------------------------
def map_icar_to_recognizer(model, state_dict, prefix: str) -> None:
    """An official iCAR state dict -> a video recognizer's keys.

    Its Swin is inflated to the video backbone (``inflate_state_dict``),
    its text tower and visual projection go to
    ``cls_head.text_classifier``.  A 2D OpenMMLab Swin
    (``tools/convert_icar.py`` output) is refused: the video backbone
    inflates original names only.
    """
    from .backbone_filters import inflate_state_dict
    from .text import convert_icar_text_classifier
    name = type(model).__name__
    official, consumed = find_icar_state_dict(state_dict, prefix)
    if official is None:
        if any(k.startswith(prefix + 'backbone.stages.')
               for k in state_dict):
            raise CheckpointError(
                f'{name}: this checkpoint holds a 2D '
                'OpenMMLab Swin (backbone.stages.*), e.g. the output of '
                'tools/convert_icar.py; the video backbone reads the '
                'official iCAR file (or an original Swin checkpoint) '
                'directly: pass that file instead')
        return
    for key in consumed:
        state_dict.pop(key)
    parts = split_icar_state_dict(official, 'iCAR checkpoint')
    rebuilt = list(parts['rebuilt'])
    if parts['swin']:
        inflated = inflate_state_dict(model.backbone, parts['swin'])
        for key, value in inflated.items():
            state_dict[prefix + 'backbone.' + key] = value
        # e.g. pos_embed: no place for it in the video backbone
        rebuilt += [ICAR_VISUAL_BACKBONE + k for k in parts['swin']
                    if k not in inflated and k not in ('norm.weight',
                                                       'norm.bias')]
    notes = _text_to_classifier(
        getattr(model.cls_head, 'text_classifier', None),
        convert_icar_text_classifier(official), rebuilt, state_dict,
        prefix + 'cls_head.text_classifier.',
        f'the head {type(model.cls_head).__name__} has no '
        'text_classifier: text weights ignored')
    if parts['unexpected']:
        notes.append(f"unrecognised keys {parts['unexpected'][:5]}")
    _print_log(
        f'{name}: reading an official iCAR checkpoint (Swin inflated to the '
        'video backbone, text tower and visual projection to '
        f'cls_head.text_classifier){_joined(notes)}')
    # what is not loaded: the Swin buffers (rebuilt for the 3D window),
    # pos_embed, RoBERTa's position_ids / pooler; anything else that did
    # not find a place stays "unrecognised"
    rest = log_rebuilt_unused(f'{name} (official iCAR checkpoint)', rebuilt)
    if rest:
        _print_log(f'{name}: 2D weights with no place in the video '
                   f'backbone: {rest[:8]}', level=logging.WARNING)


# ----------------------------------------------------------------------------
# any other model (detectors): load_from
# ----------------------------------------------------------------------------
def _fit_swin_for_backbone(backbone, swin, rebuilt, source):
    """Converted Swin weights (OpenMMLab names) ready for ``backbone``.

    For our ``ICARSwinTransformer`` (it has ``pos_embed_grid``) relative
    position tables are resized to its window and ``pos_embed`` becomes its
    absolute position embedding when ``use_abs_pos_embed=True``; otherwise
    ``pos_embed`` is listed in ``rebuilt``.
    """
    from mmengine.logging import MMLogger

    from .backbone_filters import fit_abs_pos_embed
    logger = MMLogger.get_current_instance()
    ours = hasattr(backbone, 'pos_embed_grid')
    if ours:
        swin = fit_position_tables(swin, backbone.state_dict(), logger)
    if 'pos_embed' in swin and ours and backbone.use_abs_pos_embed:
        fit_abs_pos_embed(backbone, swin, source, logger)
    elif 'pos_embed' in swin:
        swin.pop('pos_embed')
        rebuilt.append(ICAR_VISUAL_BACKBONE + 'pos_embed')
    return swin


def _map_text_classifiers(model, text, mapped, parts, notes):
    """The text tower and projections to every text classifier of
    ``model`` (anything with ``fit_checkpoint_weights``)."""
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


def fit_icar_checkpoint(model, checkpoint, source='checkpoint',
                        logger='current'):
    """Map an official iCAR file, in place, onto a model that does not read
    it itself (a detector, or any model built of our modules).

    The Swin goes to ``backbone.*`` (OpenMMLab names, tables resized to the
    backbone's window), the text tower and both projections to every text
    classifier of the model (``...text_classifier.*``; a visual projection of
    another width keeps its initialisation, see
    :func:`~icar_dense.checkpoint.text.fit_text_classifier_state`).
    Everything else of the model (neck, RPN, RoI heads, ...) is not in the
    file: the caller decides whether that is acceptable
    (``icar_dense.engine.checkpoint_check``).  One line says what was
    mapped, one "rebuilt / unused" line lists the buffers and unused weights
    left out.

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
    rebuilt, notes, parts = [], [], []
    converted, unknown = convert_icar_state_dict(official, source, rebuilt)
    mapped = OrderedDict()
    swin = OrderedDict((k[len('backbone.'):], v) for k, v in converted.items()
                       if k.startswith('backbone.'))
    backbone = getattr(model, 'backbone', None)
    if swin and isinstance(backbone, torch.nn.Module):
        swin = _fit_swin_for_backbone(backbone, swin, rebuilt, source)
        for key, value in swin.items():
            mapped['backbone.' + key] = value
        for key, value in _own_index_buffers(backbone).items():
            mapped['backbone.' + key] = value
        parts.append(f'its Swin to backbone.* ({len(swin)} tensors)')
    elif swin:
        notes.append(f'{type(model).__name__} has no backbone: the Swin '
                     'is not used')
    text = OrderedDict(
        (k[len('text_classifier.'):], v) for k, v in converted.items()
        if k.startswith('text_classifier.'))
    _map_text_classifiers(model, text, mapped, parts, notes)
    if not parts:
        notes.append('the model has no backbone and no text classifier to '
                     'take them')
    if unknown:
        notes.append(f'unrecognised keys {unknown[:5]}')
    checkpoint.clear()
    checkpoint['state_dict'] = mapped
    _print_log(
        f'{source}: an official iCAR checkpoint given to '
        f'{type(model).__name__}: mapped {"; ".join(parts) or "nothing"}'
        f'{_joined(notes)}', logger)
    log_rebuilt_unused(source, list(dict.fromkeys(rebuilt)), logger=logger)
    return True
