"""The package's shape: layers imported only downwards, modules kept small.

Read from the source with :mod:`ast` (no import), so the check also sees
imports made inside functions -- a lazy import from a higher layer is still
a dependency that goes the wrong way. docs/design.md draws the same layers.
"""
import ast
import os
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PACKAGE = osp.join(REPO, 'icar_dense')

# Lowest first. A module may import its own layer and the layers below it.
# The most specific prefix decides a module's layer.
LAYERS = (
    ('base', ('icar_dense.version', 'icar_dense._lazy', 'icar_dense.compat',
              'icar_dense.utils', 'icar_dense.checkpoint',
              'icar_dense.registry')),
    ('text', ('icar_dense.models.text', )),
    ('backbones', ('icar_dense.models.backbones', )),
    ('datasets', ('icar_dense.datasets', )),
    ('heads', ('icar_dense.models', )),
    ('evaluation', ('icar_dense.evaluation', )),
    ('inmap', ('icar_dense.inmap', )),
    ('engine', ('icar_dense.engine', )),
    ('apis', ('icar_dense.apis', )),
    ('entry', ('icar_dense', 'icar_dense.det', 'icar_dense.seg',
               'icar_dense.action')),
)
# A module over this many lines states why at the top of its docstring.
MAX_LINES = 400
SIZE_REASON = 'Size:'


def _module_name(path):
    rel = osp.relpath(path, REPO)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _package_modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith('.py'):
                path = osp.join(folder, name)
                yield _module_name(path), path


def _imported(module, path, tree):
    """Names of icar_dense modules ``module`` imports (any nesting)."""
    package = module if path.endswith('__init__.py') else \
        module.rsplit('.', 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1])
                target = f'{base}.{node.module}' if node.module else base
            else:
                target = node.module or ''
            # ``from icar_dense import compat`` imports icar_dense.compat
            targets = [f'{target}.{alias.name}' for alias in node.names]
            if not node.module or target == 'icar_dense':
                yield from targets
            else:
                yield target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def layer_of(module):
    best, rank = None, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + '.'):
                if best is None or len(prefix) > len(best):
                    best, rank = prefix, index
    return rank


def import_graph():
    """``(importer, imported)`` pairs inside the package."""
    known = dict(_package_modules())
    edges = set()
    for module, path in known.items():
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for target in _imported(module, path, tree):
            if not target.startswith('icar_dense'):
                continue
            # ``from .x import name``: the module x, not the name in it
            while target not in known and '.' in target:
                target = target.rsplit('.', 1)[0]
            if target != module:
                edges.add((module, target))
    return edges


def test_every_module_has_a_layer():
    missing = [m for m, _ in _package_modules() if layer_of(m) is None]
    assert not missing, f'modules outside LAYERS: {missing}'


def test_imports_only_go_down():
    upward = sorted(
        f'{a} ({LAYERS[layer_of(a)][0]}) imports {b} '
        f'({LAYERS[layer_of(b)][0]})' for a, b in import_graph()
        if layer_of(b) > layer_of(a))
    assert not upward, 'imports from a higher layer:\n' + '\n'.join(upward)


def test_the_check_sees_an_upward_import():
    # the rule has teeth: a lazy import inside a function counts
    tree = ast.parse('def f():\n    from icar_dense.engine import hooks\n')
    targets = list(
        _imported('icar_dense.models.text.bank',
                  'icar_dense/models/text/bank.py', tree))
    assert targets == ['icar_dense.engine']
    assert layer_of('icar_dense.engine') > layer_of(
        'icar_dense.models.text.bank')


@pytest.mark.parametrize('module,path', sorted(_package_modules()))
def test_module_size(module, path):
    with open(path, encoding='utf-8') as f:
        source = f.read()
    lines = source.count('\n')
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(source)) or ''
    assert SIZE_REASON in doc, (
        f'{module}: {lines} lines; split it by purpose or say why at the top '
        f'of its docstring ("{SIZE_REASON} ...")')
