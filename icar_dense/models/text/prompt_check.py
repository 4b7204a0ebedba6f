# Copyright (c) icar_dense contributors. All rights reserved.
"""Classes whose prompts the text encoder cannot tell apart.

A text tower sees token ids, not strings: ``'Cat'`` and ``'cat'`` are the
same prompt for a lower-casing tokenizer, and two long names that differ
only after the ``max_length``-th token are cut to the same ids.  Such
classes get identical embeddings, so one of them can never be predicted.
:func:`check_prompt_tokens` (run by ``TextClassifier`` whenever it builds the
prompts of a vocabulary) tokenizes every prompt exactly as the encoder will,
including its truncation, and

* refuses two classes whose prompts all tokenize identically, naming the
  pair and why (case, truncation or the tokenizer);
* reports once, as a warning listing the classes, prompts that are longer
  than the encoder's limit and therefore cut.

Encoders other than ``RobertaTextEncoder`` and ``CLIPTextTransformer`` are
not checked (their tokenization is unknown here).
"""
import logging
from typing import Callable, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

from .templates import PromptSet
from .vocabulary import DATASET_VOCABULARIES, Vocabulary

__all__ = ['check_prompt_tokens', 'encoder_tokenizer']

# (encoder signature, prompts, counts) already checked in this process: the
# classifiers of a cascade share prompts and warn (and pay) once
_checked: dict = {}
_MAX_MEMO = 16


def encoder_tokenizer(
        encoder) -> Optional[Tuple[Callable, int, str, Callable]]:
    """``(tokenize, limit, limit_name, cut)`` for a known encoder, else None.

    ``tokenize(texts)`` gives the untruncated token ids (special tokens
    included); ``cut(ids)`` what the encoder keeps of a sequence longer than
    ``limit``.
    """
    from .clip import CLIPTextTransformer
    from .roberta import RobertaTextEncoder
    if isinstance(encoder, RobertaTextEncoder):
        tok, lower = encoder.tokenizer, encoder.lower_case

        def tokenize(texts: Sequence[str]) -> List[List[int]]:
            texts = [t.lower() for t in texts] if lower else list(texts)
            return tok(texts, add_special_tokens=True, truncation=False,
                       padding=False, verbose=False)['input_ids']

        def cut(ids: List[int], limit: int) -> List[int]:
            # truncation keeps <s> ... </s>
            return ids[:limit - 1] + ids[-1:]

        return tokenize, encoder.max_length, 'max_length', cut
    if isinstance(encoder, CLIPTextTransformer):
        bpe, sot, eot = encoder._tokenizer, encoder._sot, encoder._eot

        def tokenize(texts: Sequence[str]) -> List[List[int]]:
            return [[sot] + bpe.encode(t) + [eot] for t in texts]

        def cut(ids: List[int], limit: int) -> List[int]:
            return ids[:limit - 1] + [eot]  # as CLIPTextTransformer.tokenize

        return tokenize, encoder.context_length, 'context_length', cut
    return None


def _why_same(a: str, b: str, truncated: bool, limit_name: str,
              limit: int) -> str:
    if a.lower() == b.lower():
        return 'they differ only in upper/lower case, which the tokenizer ' \
               'ignores'
    if truncated:
        return (f'they differ only after the first {limit} tokens of their '
                f'prompts, where the encoder cuts them ({limit_name}='
                f'{limit})')
    return 'the tokenizer maps their prompts to the same tokens'


def check_prompt_tokens(encoder, vocabulary: Vocabulary, prompts: PromptSet,
                        owner: str = 'TextClassifier') -> None:
    """Refuse classes with identically tokenized prompts; report (once)
    the classes whose prompts are cut at the encoder's limit.

    Args:
        encoder: The text encoder that will embed ``prompts``.
        vocabulary (Vocabulary): The classes, in label order.
        prompts (PromptSet): Their prompts, grouped by class.
        owner (str): Who asks, for messages.
    """
    spec = encoder_tokenizer(encoder)
    if spec is None or not prompts.texts:
        return
    tokenize, limit, limit_name, cut = spec
    counts = prompts.counts.tolist()
    try:
        signature = repr(sorted(encoder.cache_signature().items()))
    except Exception:  # noqa: BLE001 - memo only
        signature = repr((type(encoder).__name__, id(encoder)))
    memo = (signature, hash(tuple(prompts.texts)), tuple(counts),
            tuple(vocabulary.names))
    if memo in _checked:
        if _checked[memo] is not None:
            raise ValueError(_checked[memo])
        return

    ids = tokenize(prompts.texts)
    keys, truncated, start = [], [], 0
    for count in counts:
        key, cut_any = [], False
        for seq in ids[start:start + count]:
            if len(seq) > limit:
                cut_any = True
                seq = cut(seq, limit)
            key.append(tuple(seq))
        start += count
        keys.append(tuple(key))
        truncated.append(cut_any)

    names = vocabulary.names
    first = {}
    clashes = []
    for label, key in enumerate(keys):
        if key in first:
            clashes.append((first[key], label))
        else:
            first[key] = label
    error = None
    if clashes:
        i, j = clashes[0]
        why = _why_same(vocabulary.prompt_names[i], vocabulary.prompt_names[j],
                        truncated[i] or truncated[j], limit_name, limit)
        more = (f' ({len(clashes)} such pairs; also '
                + ', '.join(f'{names[a]!r} / {names[b]!r}'
                            for a, b in clashes[1:4])
                + (', ...' if len(clashes) > 4 else '') + ')'
                if len(clashes) > 1 else '')
        error = (
            f'{owner}: classes {names[i]!r} (label {i}) and {names[j]!r} '
            f'(label {j}) of {vocabulary.source} give identical prompts once '
            f'tokenized: {why}, so they get the same text embedding and '
            f'can never be told apart{more}. Rename, describe or merge '
            'them.')
    if error is not None and vocabulary.source in DATASET_VOCABULARIES:
        # A benchmark's own class list is evaluated as the benchmark defines
        # it (renaming would change the benchmark): said loudly, not refused.
        print_log(error.replace('Rename, describe or merge them.',
                                'Evaluated as the benchmark defines them.'),
                  logger='current', level=logging.WARNING)
        error = None
    if len(_checked) >= _MAX_MEMO:
        _checked.clear()
    _checked[memo] = error
    if error is not None:
        raise ValueError(error)
    cut_classes = [names[c] for c, flag in enumerate(truncated) if flag]
    if cut_classes:
        shown = ', '.join(map(repr, cut_classes[:10]))
        print_log(
            f'{owner}: prompts of {len(cut_classes)} of {len(names)} classes '
            f'of {vocabulary.source} are longer than {limit_name}={limit} '
            f'tokens and are cut (the text after token {limit} is not '
            f'seen): {shown}{", ..." if len(cut_classes) > 10 else ""}',
            logger='current', level=logging.WARNING)
