"""Fingerprint every public config: resolved config and model state dict.

A refactoring must leave every public config resolving to the same model
(issue 17). This tool writes, per config, the resolved config and the
state-dict keys with their shapes of the model it builds; ``--compare``
reports what differs between two fingerprints (e.g. one written on the
commit before a change and one after):

    python tools/fingerprint_configs.py before.json      # on the old commit
    python tools/fingerprint_configs.py after.json       # on the new one
    python tools/fingerprint_configs.py --compare before.json after.json

Models are built with random weights (no checkpoint is read); a config whose
data files are absent fails to build and its error is recorded instead, so
run both sides with the same data (and ``ICAR_ROBERTA`` pointing at a
tokenizer folder: any RoBERTa BPE vocabulary gives the same shapes).
"""
import argparse
import glob
import importlib
import json
import os
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TASK_MODULES = {
    'mmdet': 'icar_dense.det',
    'mmseg': 'icar_dense.seg',
    'mmaction': 'icar_dense.action'
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('out', nargs='?', help='JSON file to write')
    parser.add_argument(
        '--compare',
        nargs=2,
        metavar=('BEFORE', 'AFTER'),
        help='compare two fingerprints instead')
    parser.add_argument(
        '--configs',
        default=osp.join(REPO, 'configs', '*', '*.py'),
        help='glob of the configs (default: every public config)')
    args = parser.parse_args(argv)
    if not args.compare and not args.out:
        parser.error('give OUT, or --compare BEFORE AFTER')
    return args


def _state_dict_shapes(model_cfg, scope):
    from mmengine.registry import MODELS, DefaultScope
    importlib.import_module(TASK_MODULES[scope])
    with DefaultScope.overwrite_default_scope(scope):
        if 'type' in model_cfg:
            parts = {'': MODELS.build(model_cfg)}
        else:  # configs/cls: the parts tools/zeroshot_cls.py builds
            parts = {
                f'{name}.': MODELS.build(sub)
                for name, sub in model_cfg.items()
                if isinstance(sub, dict) and 'type' in sub
            }
    return {
        prefix + key: list(value.shape)
        for prefix, model in parts.items()
        for key, value in model.state_dict().items()
    }


def fingerprint(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    entry = dict(cfg=json.loads(json.dumps(cfg.to_dict(), default=str)))
    if 'model' in cfg:
        scope = cfg.get('default_scope') or 'mmdet'
        try:
            entry['state_dict'] = _state_dict_shapes(cfg.model, scope)
        except Exception as err:  # recorded: the same on both sides
            entry['error'] = f'{type(err).__name__}: {err}'[:300]
    return entry


def _diff(a, b, where=''):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                yield f'{where}.{key}: added {json.dumps(b[key])[:120]}'
            elif key not in b:
                yield f'{where}.{key}: removed'
            else:
                yield from _diff(a[key], b[key], f'{where}.{key}')
    elif a != b:
        yield f'{where}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}'


def read_fingerprint(path):
    """A file this tool wrote, or a clear error naming it."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except OSError as err:
        raise SystemExit(f'fingerprint_configs: cannot read {path}: '
                         f'{err.strerror}')
    except ValueError as err:
        raise SystemExit(f'fingerprint_configs: {path} is not JSON ({err})')
    if not isinstance(data, dict) or not all(
            isinstance(v, dict) and 'cfg' in v for v in data.values()):
        raise SystemExit(f'fingerprint_configs: {path} is not a fingerprint '
                         'written by this tool (config -> {"cfg", ...})')
    return data


def compare(before_path, after_path):
    before = read_fingerprint(before_path)
    after = read_fingerprint(after_path)
    same_models = 0
    for name in sorted(set(before) | set(after)):
        lines = list(_diff(before.get(name, {}), after.get(name, {})))
        models = [line for line in lines if not line.startswith('.cfg.')]
        same_models += 'state_dict' in before.get(name, {}) and not models
        for line in lines:
            print(f'{name}{line}')
    built = sum('state_dict' in entry for entry in before.values())
    print(f'{same_models} of {built} built models have the same state-dict '
          f'keys and shapes; {len(before)} configs before, {len(after)} '
          'after')
    return same_models == built and set(before) == set(after)


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        return 0 if compare(*args.compare) else 1
    sys.path.insert(0, REPO)
    os.chdir(REPO)  # the configs name their data relative to the repo
    import icar_dense  # noqa: F401
    result = {}
    paths = sorted(glob.glob(args.configs))
    if not paths:
        raise SystemExit(f'fingerprint_configs: no config matches '
                         f'--configs {args.configs}')
    for path in paths:
        name = osp.relpath(path, REPO)
        result[name] = fingerprint(path)
        built = len(result[name].get('state_dict', {}))
        print(f'{name}: {built} tensors {result[name].get("error", "")}',
              flush=True)
    # plain json + rename (not icar_dense.checkpoint): the tool also runs
    # on commits before that package existed
    tmp = f'{args.out}.tmp'
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=0, sort_keys=True)
    os.replace(tmp, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
