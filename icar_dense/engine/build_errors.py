"""``did you mean 'X'?`` for a misspelled registry type.

mmengine raises ``KeyError('X is not in the <scope>::<name> registry ...')``
for an unknown ``type``, nested builds wrapping it in their own message.
:func:`suggest_types` translates such an error, wherever the build happened
inside it, into ``'X' is not a registered <name> type; did you mean 'Y'?``
with the closest names of the registry, its parents and, scope-prefixed, the
other OpenMMLab scopes.  ``tools/*.py`` run under it and
:class:`~icar_dense.engine.runner.ICARRunner` builds its model and
dataloaders under it; ``Registry.build`` itself is mmengine's.
"""
import contextlib
import difflib
import re
from typing import Iterable, List, Optional

_NOT_IN_REGISTRY = re.compile(
    r'(?P<type>[\w.]+) is not in the (?:(?P<scope>\w+)::)?(?P<name>[\w ]+?) '
    r'registry')


def _registry_tree(registry):
    """``registry`` and its parents, then every other registry of the tree."""
    chain = []
    node = registry
    while node is not None:
        chain.append(node)
        node = node.parent
    seen = {id(r) for r in chain}
    others = []
    stack = [chain[-1]]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            others.append(node)
        stack.extend(node.children.values())
    return chain, others


def _find_registry(name: str, scope: Optional[str]):
    """The registry called ``name`` of ``scope`` (mmengine's if unknown)."""
    import mmengine.registry as roots
    from mmengine.registry import Registry
    root = next((r for r in vars(roots).values()
                 if isinstance(r, Registry) and r.name == name), None)
    if root is None:
        return None
    if scope is None or scope == root.scope:
        return root
    _, others = _registry_tree(root)
    return next((r for r in others if r.scope == scope), root)


def _close_names(word: str, names: Iterable[str], n: int = 3) -> List[str]:
    lower = {}
    for name in sorted(set(names)):
        lower.setdefault(name.lower(), name)
    matches = difflib.get_close_matches(word.lower(), list(lower), n=n,
                                        cutoff=0.6)
    return [lower[m] for m in matches]


def suggest_registered_names(registry, name: str) -> List[str]:
    """Registered names close to ``name``: own scope first, then others.

    Names found only in another scope come scope-prefixed
    (``'mmdet.SwinTransformer'``), the spelling a config can use.
    """
    if '.' in name:
        name = name.split('.', 1)[1]
    chain, others = _registry_tree(registry)
    local = _close_names(name, (k for r in chain for k in r.module_dict))
    if local:
        return local
    scoped = {}
    for node in others:
        for key in node.module_dict:
            scoped.setdefault(key, f'{node.scope}.{key}')
    return [scoped[m] for m in _close_names(name, scoped)]


def with_suggestion(err: KeyError) -> Optional[KeyError]:
    """``err`` with ``did you mean``, or None if it is no unknown type."""
    message = err.args[0] if err.args and isinstance(err.args[0],
                                                     str) else None
    if message is None or 'did you mean' in message:
        return None
    match = _NOT_IN_REGISTRY.search(message)
    if match is None:
        return None
    registry = _find_registry(match.group('name'), match.group('scope'))
    names = (suggest_registered_names(registry, match.group('type'))
             if registry is not None else [])
    if not names:
        return None
    hint = ' or '.join(repr(n) for n in names)
    return KeyError(f'{match.group("type")!r} is not a registered '
                    f'{match.group("name")} type; did you mean {hint}? '
                    f'({message})')


@contextlib.contextmanager
def suggest_types():
    """Re-raise an unknown-type ``KeyError`` with the closest names."""
    try:
        yield
    except KeyError as err:
        better = with_suggestion(err)
        if better is None:
            raise
        raise better.with_traceback(err.__traceback__) from None


__all__ = ['suggest_registered_names', 'suggest_types', 'with_suggestion']
