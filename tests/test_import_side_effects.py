"""``import icar_dense`` (and its task modules) replaces no attribute of
mmengine, mmdet, mmseg or mmaction2 beyond the release-defect fixes that
``icar_dense.compat.CHANGED_ATTRIBUTES`` declares.

Run as a script (in a fresh process, by the test below), this file imports
the host libraries' modules first, snapshots every attribute of their
modules and of the classes they define (functions, methods, descriptors),
the entries of their dict tables (``CheckpointLoader._schemes``, the file
backends, ...) and of their registries, then imports ``icar_dense``,
``icar_dense.det``, ``.seg`` and ``.action`` and prints, as JSON, every
attribute or entry that was replaced or removed, and every attribute a class
or module gained.  New names in a registry or table are additions (our
``ICARRunner``, the ``atomic_local`` backend, ...), as is the icar_dense task
module added to the ``locations`` of a host library's registries
(``icar_dense.registry.TASK_MODULES``).
"""
import importlib
import json
import sys

ROOTS = ('mmengine', 'mmdet', 'mmseg', 'mmaction')
# what a process of a host library has imported before using icar_dense
# (mmaction.models needs the compat fixes to import at all)
HOST_MODULES = (
    'mmengine.registry', 'mmengine.runner', 'mmengine.runner.checkpoint',
    'mmengine.fileio', 'mmengine.dataset', 'mmengine.optim', 'mmengine.hooks',
    'mmengine.model', 'mmengine.logging', 'mmengine.dist', 'mmengine.config',
    'mmdet.registry', 'mmdet.models', 'mmdet.datasets', 'mmdet.evaluation',
    'mmdet.engine', 'mmdet.visualization', 'mmseg.registry', 'mmseg.models',
    'mmseg.datasets', 'mmseg.evaluation', 'mmseg.engine',
    'mmseg.visualization', 'mmaction.registry', 'mmaction.utils',
    'mmaction.structures')
ICAR_MODULES = ('icar_dense', 'icar_dense.det', 'icar_dense.seg',
                'icar_dense.action')


def _entries(owner, table, snap):
    for key, value in list(table.items()):
        snap[(owner, str(key))] = id(value)


def snapshot():
    """``{(owner, attribute): id}`` of the host libraries' loaded modules."""
    from mmengine.registry import Registry
    snap, locations = {}, {}
    for name, module in list(sys.modules.items()):
        if module is None or name.split('.')[0] not in ROOTS:
            continue
        for attr, value in list(vars(module).items()):
            if attr.startswith('__') or isinstance(value, type(sys)):
                continue  # dunders, submodules (added by later imports)
            snap[(name, attr)] = 'table' if isinstance(value,
                                                       dict) else id(value)
            if isinstance(value, dict):
                _entries(f'{name}.{attr}', value, snap)
            elif isinstance(value, Registry):
                _entries(f'{name}.{attr}', value._module_dict, snap)
                locations[f'{name}.{attr}'] = (value.scope,
                                               list(value._locations))
            elif isinstance(value, type) and value.__module__ == name:
                owner = f'{name}.{value.__qualname__}'
                for cattr, cvalue in list(vars(value).items()):
                    if isinstance(cvalue, dict):
                        snap[(owner, cattr)] = 'table'
                        _entries(f'{owner}.{cattr}', cvalue, snap)
                    else:
                        snap[(owner, cattr)] = id(cvalue)
    return snap, locations


def differences(before, after):
    """Replaced or removed attributes and entries; attributes new to a
    module or class (not new entries of a table or registry)."""
    snap, locations = before
    new_snap, new_locations = after
    tables = {f'{o}.{a}' for (o, a), v in snap.items() if v == 'table'}
    tables |= set(locations)  # registries
    changed = [key for key, value in snap.items()
               if new_snap.get(key, 'removed') != value]
    owners = {owner for owner, _ in snap}
    added = [key for key in new_snap
             if key not in snap and key[0] in owners and key[0] not in tables]
    return sorted(changed + added)


def location_changes(before, after):
    """Registries whose ``locations`` changed other than by gaining their
    scope's icar_dense task module."""
    from icar_dense.registry import TASK_MODULES
    odd = []
    for name, (scope, old) in before[1].items():
        new = after[1].get(name, (scope, []))[1]
        allowed = [old, old + [TASK_MODULES.get(scope)]]
        if new not in allowed:
            odd.append([name, old, new])
    return odd


def main():
    for name in HOST_MODULES:
        importlib.import_module(name)
    before = snapshot()
    for name in ICAR_MODULES:
        importlib.import_module(name)
    after = snapshot()
    from icar_dense import compat
    print(json.dumps(dict(
        differences=differences(before, after),
        locations=location_changes(before, after),
        declared=[list(c) for c in compat.CHANGED_ATTRIBUTES])))


def test_import_replaces_only_what_compat_declares():
    from conftest import check_ok, run_tool
    proc = check_ok(run_tool([sys.executable, __file__], timeout=600))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    declared = {tuple(c) for c in result['declared']}
    found = {tuple(c) for c in result['differences']}
    assert found - declared == set(), (
        'import icar_dense replaced attributes compat.py does not declare '
        '(make it a registered component instead):\n' +
        '\n'.join(f'  {owner}: {attr}' for owner, attr in
                  sorted(found - declared)))
    assert result['locations'] == []
    # the snapshot sees compat's own changes (it can fail)
    assert ('mmengine.runner.checkpoint', 'load_from_http') in found
    assert ('mmengine.logging.history_buffer.HistoryBuffer',
            '__getstate__') in found


if __name__ == '__main__':
    main()
