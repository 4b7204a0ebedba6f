"""What a registered class accepts as config keys, read from its code.

Used by :mod:`icar_dense.engine.preflight` to check a config's arguments
before anything is built.  Many OpenMMLab classes take ``**kwargs``; they
are followed through the MRO while each ``__init__`` hands them to its
parent (read from the source with :mod:`ast`); a class that keeps them for
something else is resolved by :data:`KWARGS_SINKS` or reported as open.
"""
import ast
import inspect
import textwrap
from typing import Set, Tuple


def resolve_type(registry, type_, scope):
    """The class ``type_`` names in ``registry`` under ``scope``, or None."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    with registry.switch_scope_and_registry(scope) as reg:
        try:
            return reg.get(type_)
        except Exception:  # noqa: BLE001  (a bad 'a.b' path)
            return None


def _checkpoint_hook_sink(cfg, scope):
    # CheckpointHook(**kwargs) -> Runner.save_checkpoint(..., **kwargs);
    # the hook passes every argument save_checkpoint has, so none is left
    return set()


def _ema_hook_sink(cfg, scope):
    # EMAHook(ema_type, **kwargs) -> MODELS.build(dict(type=ema_type,
    # **kwargs), default_args=dict(model=...))
    from mmengine.registry import MODELS
    ema_cls = resolve_type(
        MODELS, cfg.get('ema_type', 'ExponentialMovingAverage'), scope)
    if ema_cls is None:
        return None
    names, closed = accepted_arguments(ema_cls)
    return (names - {'model'}) if closed else None


def _sinks():
    from mmengine.hooks import CheckpointHook, EMAHook
    return {CheckpointHook: _checkpoint_hook_sink, EMAHook: _ema_hook_sink}


#: class -> function(cfg, scope) giving the extra names its ``**kwargs``
#: accept (or None: cannot tell); for classes that keep ``**kwargs``
#: instead of handing them to ``super().__init__``.
KWARGS_SINKS = None


def _kwargs_use(func, varkw: str):
    """How ``func`` uses its ``**varkw``.

    Returns ``(status, consumed)``: status True when ``**varkw`` only goes
    to the parent's ``__init__``, False when it is never used (ignored),
    None when it is used otherwise or the source cannot be read;
    ``consumed`` names the parent's parameters that call fills itself
    (positions as ints, keywords as strings), e.g. ``'lr'`` given for
    ``param_name`` by ``super().__init__(optimizer, 'lr', *args, **kwargs)``.
    """
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(func)))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None, set()
    forwarded, consumed, in_super = 0, set(), set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == '__init__'):
            continue
        target = node.func.value
        if not ((isinstance(target, ast.Call)
                 and isinstance(target.func, ast.Name)
                 and target.func.id == 'super')
                or isinstance(target, (ast.Name, ast.Attribute))):
            continue
        passes = [k for k in node.keywords
                  if k.arg is None and isinstance(k.value, ast.Name)
                  and k.value.id == varkw]
        if not passes:
            continue
        forwarded += 1
        in_super.update(id(k.value) for k in passes)
        # Base.__init__(self, ...) passes self explicitly
        offset = 0 if isinstance(target, ast.Call) else 1
        for i, arg in enumerate(node.args[offset:]):
            if isinstance(arg, ast.Starred):
                break
            consumed.add(i)
        for keyword in node.keywords:
            if keyword.arg is not None and not (
                    isinstance(keyword.value, ast.Name)
                    and keyword.value.id == keyword.arg):
                consumed.add(keyword.arg)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Name) and node.id == varkw
                and id(node) not in in_super):
            return None, set()
    return forwarded > 0, consumed


def accepted_arguments(cls, cfg=None, scope=None) -> Tuple[Set[str], bool]:
    """The keyword arguments ``cls(...)`` accepts, and whether that is all.

    Follows ``**kwargs`` through the MRO while each ``__init__`` hands them
    to its parent; ``closed`` is False when some ``**kwargs`` go elsewhere
    and :data:`KWARGS_SINKS` does not know where.
    """
    global KWARGS_SINKS
    if KWARGS_SINKS is None:
        KWARGS_SINKS = _sinks()
    if not inspect.isclass(cls):
        try:
            params = inspect.signature(cls).parameters.values()
        except (TypeError, ValueError):
            return set(), False
        names = {p.name for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return names, not any(p.kind == p.VAR_KEYWORD for p in params)
    import torch.nn as nn
    names: Set[str] = set()
    consumed: Set = set()  # filled in by the child's super().__init__ call
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        if klass is object or klass is nn.Module:
            return names, True  # they take no keyword arguments
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            return names, False
        for i, p in enumerate(params):
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                continue
            taken = p.name in consumed or (
                p.kind == p.POSITIONAL_OR_KEYWORD and i in consumed)
            if not taken:
                names.add(p.name)
        varkw = next((p.name for p in params if p.kind == p.VAR_KEYWORD),
                     None)
        if varkw is None:
            return names, True
        if klass in KWARGS_SINKS:
            extra = KWARGS_SINKS[klass](cfg or {}, scope)
            if extra is None:
                return names, False
            return names | extra, True
        forwards, consumed = _kwargs_use(init, varkw)
        if forwards is None:
            return names, False
        if forwards is False:
            return names, True  # **kwargs ignored: nothing else has effect
    return names, True


__all__ = ['KWARGS_SINKS', 'accepted_arguments', 'resolve_type']
