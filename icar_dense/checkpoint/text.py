"""Checkpoint weights for a ``TextClassifier`` (text tower + projections).

The functions here hold what the text classifier knows about checkpoints,
so that it only calls them:

* :func:`convert_icar_text_classifier` -- an official iCAR state dict in
  ``TextClassifier`` keys (``text_encoder.*``, ``visual_proj.weight``);
* :func:`read_text_classifier_checkpoint` -- a file (official or
  converted) read safely and reduced to those keys;
* :func:`fit_text_classifier_state` -- the entries a classifier can take
  when a whole model's loader maps a file onto it (``fit_icar_checkpoint``,
  the segmentor, the recognizer);
* :func:`filter_text_classifier_state` + :func:`report_text_classifier_load`
  -- the classifier's own ``load_checkpoint``: what to load, the refusal of
  tensors that do not fit, and the one log line of the result;
* :func:`infer_roberta_config` -- the RoBERTa config of a text tower.
"""
import logging
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from .errors import CheckpointError
from .icar import split_icar_state_dict
from .io import load_checkpoint_file
from .layout import ICAR_TEXT, unwrap_state_dict
from .report import log_rebuilt_unused

# keys old transformers releases saved that RobertaModel no longer has
LEGACY_TEXT_KEYS = ('text_encoder.backbone.embeddings.position_ids',
                    'text_encoder.backbone.pooler.')
_TOWER = 'text_encoder.'


def convert_icar_text_classifier(
        state_dict: Dict[str, torch.Tensor],
        rebuilt: Optional[List[str]] = None) -> Dict[str, torch.Tensor]:
    """Rename an official iCAR state dict to ``TextClassifier`` keys.

    ``sentence_model.*`` becomes ``text_encoder.*`` (``backbone`` and
    ``projector`` keep their names) and ``visual_model.projector.weight``
    becomes ``visual_proj.weight``; the Swin keys belong to the backbone and
    are left out, and so are RoBERTa's ``embeddings.position_ids`` buffer
    and ``pooler.*`` (unused: the text feature is a masked mean).

    Args:
        state_dict (dict[str, Tensor]): ``torch.load(path)['model']``.
        rebuilt (list, optional): Receives the text keys left out as
            rebuilt / unused.

    Returns:
        dict[str, Tensor]: Keys relative to a ``TextClassifier``.
    """
    parts = split_icar_state_dict(state_dict, 'iCAR checkpoint')
    if rebuilt is not None:
        rebuilt.extend(k for k in parts['rebuilt'] if k.startswith(ICAR_TEXT))
    out = {_TOWER + k: v for k, v in parts['text'].items()}
    if parts['visual_proj'] is not None:
        out['visual_proj.weight'] = parts['visual_proj']
    return out


def read_text_classifier_checkpoint(
        path: str,
        prefix: Optional[str] = None,
        map_location: str = 'cpu') -> Tuple[Dict, str, List[str]]:
    """A converted or an official iCAR file in ``TextClassifier`` keys.

    Args:
        path (str): ``.pth`` file. A converted file holds ``state_dict``
            (``prefix`` selects the classifier's keys, e.g.
            ``'text_classifier.'``); an official iCAR file holds ``model``
            with ``sentence_model.*`` and ``visual_model.projector.weight``
            (``prefix`` is then ignored).
        prefix (str, optional): Key prefix of the classifier.
        map_location (str): Where to load tensors.

    Returns:
        tuple: ``(state, layout, rebuilt)`` -- the weights, ``'official
        iCAR'`` or ``'converted'``, and the text keys left out as rebuilt /
        unused.

    Raises:
        KeyError: the file has no text classifier weights.
    """
    state = unwrap_state_dict(load_checkpoint_file(path, map_location), path)
    rebuilt = []
    if any(k.startswith(ICAR_TEXT) for k in state):
        state = convert_icar_text_classifier(state, rebuilt)
        layout = 'official iCAR'
    else:
        if prefix:
            state = {
                k[len(prefix):]: v
                for k, v in state.items() if k.startswith(prefix)
            }
        layout = 'converted'
    if not state:
        raise KeyError(
            f'Checkpoint {path} has no TextClassifier weights'
            f'{f" under prefix {prefix!r}" if prefix else ""}: expected '
            'an official iCAR file (model.sentence_model.*) or a '
            'converted one (state_dict.text_classifier.*).')
    return state, layout, rebuilt


def fit_text_classifier_state(
        state: Dict[str, torch.Tensor],
        own: Dict[str, torch.Tensor],
        has_tower: bool = True,
        rebuilt: Optional[List[str]] = None
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The entries of a ``TextClassifier``-keyed state dict (e.g. from
    :func:`convert_icar_text_classifier`) a classifier can load.

    Args:
        state (dict): ``TextClassifier``-keyed weights.
        own (dict): The classifier's ``state_dict()``.
        has_tower (bool): False when the classifier reads an embeddings
            file (no text encoder): the text tower is left out.
        rebuilt (list, optional): Receives RoBERTa's ``position_ids`` /
            ``pooler.*`` keys of older checkpoints, left out (for the
            caller's "rebuilt / unused" line).

    Returns:
        tuple: the entries to load, and notes on what was left out: the
        text tower without a text encoder, and tensors whose shape does not
        fit (they keep their initialisation).
    """
    notes = []
    if not has_tower and any(k.startswith(_TOWER) for k in state):
        notes.append('the text classifier reads an embeddings file: '
                     'text tower weights ignored')
    kept = OrderedDict()
    for key, value in state.items():
        if key.startswith(LEGACY_TEXT_KEYS) and key not in own:
            if rebuilt is not None:
                rebuilt.append(key)
            continue
        if not has_tower and key.startswith(_TOWER):
            continue
        if key in own and own[key].shape != value.shape:
            notes.append(f'{key} {tuple(value.shape)} does not fit '
                         f'{tuple(own[key].shape)}: kept the '
                         'initialisation')
            continue
        kept[key] = value
    return kept, notes


class TextClassifierLoad(NamedTuple):
    """What :func:`filter_text_classifier_state` decided.

    ``state``: the entries to load; ``rebuilt``: keys left out as rebuilt /
    unused; ``notes``: what else was left out and why; ``shared_keys``: how
    many text tower keys were skipped because the encoder is shared.
    """
    state: Dict[str, torch.Tensor]
    rebuilt: List[str]
    notes: List[str]
    shared_keys: int


def _drop_unfit_visual_proj(state, own, notes):
    for key in [k for k in state if k.startswith('visual_proj.')]:
        if key not in own or own[key].shape != state[key].shape:
            # e.g. a segmentation decode feature narrower than the Swin
            # output the official projection was trained on
            shape = tuple(own[key].shape) if key in own else None
            notes.append(f'{key} {tuple(state[key].shape)} does not fit '
                         f'{shape}: visual_proj keeps its initialisation')
            state.pop(key)


def filter_text_classifier_state(
        state: Dict[str, torch.Tensor],
        own: Dict[str, torch.Tensor],
        path: str,
        layout: str,
        rebuilt: Optional[List[str]] = None,
        shares_encoder: bool = False,
        has_tower: bool = True) -> TextClassifierLoad:
    """What a ``TextClassifier`` loads of a checkpoint it reads itself.

    Args:
        state (dict): From :func:`read_text_classifier_checkpoint`.
        own (dict): The classifier's ``state_dict()``.
        path (str), layout (str): Named in messages.
        rebuilt (list, optional): Keys already left out as rebuilt / unused.
        shares_encoder (bool): The classifier borrows another classifier's
            text encoder (whose owner loads the tower): tower keys skipped.
        has_tower (bool): False when it reads an embeddings file.

    Raises:
        ValueError: a tensor other than the visual projection does not fit
            (the projection keeps its initialisation with a note).
    """
    rebuilt = list(rebuilt or [])
    rebuilt += [
        k for k in state if k.startswith(LEGACY_TEXT_KEYS) and k not in own
    ]
    state = {k: v for k, v in state.items() if k not in rebuilt}
    notes = []
    _drop_unfit_visual_proj(state, own, notes)
    tower = [k for k in state if k.startswith(_TOWER)]
    shared_keys = 0
    if shares_encoder:
        # the classifier that owns the shared encoder loads them
        shared_keys = len(tower)
    elif not has_tower and tower:
        notes.append(f'{len(tower)} text_encoder keys ignored (the '
                     'classifier uses an embeddings file)')
    if shares_encoder or not has_tower:
        state = {k: v for k, v in state.items() if not k.startswith(_TOWER)}
    mismatched = [
        f'{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}'
        for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(f'Checkpoint {path} ({layout}) does not fit this '
                         f'TextClassifier: {mismatched[:5]}.')
    return TextClassifierLoad(state, rebuilt, notes, shared_keys)


def report_text_classifier_load(plan: TextClassifierLoad, path: str,
                                layout: str, missing: List[str],
                                unexpected: List[str]) -> None:
    """The one log line of a classifier's ``load_checkpoint`` (a warning
    when text encoder keys are missing, keys are unexpected or something
    was left out) and the "rebuilt / unused" line.

    Raises:
        KeyError: nothing of the file was loaded and nothing explains why.
    """
    loaded = len(plan.state) - len(unexpected)
    if loaded == 0 and not plan.notes and not plan.shared_keys:
        raise KeyError(f'No key of checkpoint {path} ({layout}) matches '
                       f'this TextClassifier; unexpected: '
                       f'{unexpected[:5]}.')
    # recognised buffers / unused weights: one line, not "unexpected"
    unexpected = log_rebuilt_unused(f'TextClassifier ({path})',
                                    plan.rebuilt + list(unexpected))
    text_missing = [k for k in missing if k.startswith(_TOWER)]
    msg = (f'TextClassifier: loaded {loaded} tensors from {path} '
           f'({layout})')
    if text_missing:
        msg += (f'; text encoder keys missing: {len(text_missing)} '
                f'(e.g. {text_missing[:3]})')
    if unexpected:
        msg += f'; unexpected keys: {unexpected[:5]}'
    if plan.shared_keys:
        msg += (f'; {plan.shared_keys} text_encoder keys skipped (the '
                'encoder is shared, its owner loads them)')
    for note in plan.notes:
        msg += f'; {note}'
    from mmengine.logging import print_log
    print_log(
        msg,
        logger='current',
        level=logging.WARNING
        if text_missing or unexpected or plan.notes else logging.INFO)


def load_text_classifier_state(classifier, state, path, layout,
                               rebuilt=None, shares_encoder=False,
                               has_tower=True) -> None:
    """Filter ``state``, load it into ``classifier`` (non-strict) and
    report: what ``TextClassifier._load_filtered`` does."""
    plan = filter_text_classifier_state(
        state, classifier.state_dict(), path, layout, rebuilt,
        shares_encoder=shares_encoder, has_tower=has_tower)
    missing, unexpected = classifier.load_state_dict(plan.state, strict=False)
    report_text_classifier_load(plan, path, layout, missing, unexpected)


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
