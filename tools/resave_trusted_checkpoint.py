"""Re-save a checkpoint you trust so the safe loader accepts it.

    python tools/resave_trusted_checkpoint.py IN.pth OUT.pth

icar_dense loads every checkpoint with ``weights_only=True``; files holding
arbitrary Python objects are refused because unpickling them can run code
(the iCAR authors' files, whose ``args`` is an ``argparse.Namespace``, load
as they are and need no re-saving).  This script unpickles IN.pth fully
(ONLY run it on files from a source you trust) and writes OUT.pth with
tensors, numbers, strings and containers only (an ``argparse.Namespace``
becomes a dict of its fields); anything else is dropped and listed.
"""
import argparse
import numbers
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def plain(obj, path, dropped):
    import numpy as np
    import torch
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return torch.from_numpy(obj.copy())
    if obj is None or isinstance(obj, (str, bool, numbers.Number)):
        return obj.item() if hasattr(obj, 'item') else obj
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        kept = {}
        for key, value in obj.items():
            if isinstance(key, (str, int)):
                kept[key] = plain(value, f'{path}.{key}', dropped)
            else:
                dropped.append(f'{path}[{key!r}]: key of type '
                               f'{type(key).__name__}')
        return kept
    if isinstance(obj, (list, tuple)):
        # a plain list/tuple: namedtuples and other subclasses are classes
        # the safe loader would refuse
        items = [plain(v, f'{path}[{i}]', dropped) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    dropped.append(f'{path}: {type(obj).__name__}')
    return None


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('src')
    parser.add_argument('dst')
    args = parser.parse_args()
    if not osp.isfile(args.src):
        sys.exit(f'resave_trusted_checkpoint: no such file: {args.src!r}')
    # heavy imports only once the arguments are known to be good
    import torch

    from icar_dense.checkpoint import save_checkpoint_file
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    dropped = []
    save_checkpoint_file(plain(checkpoint, 'checkpoint', dropped), args.dst)
    for item in dropped:
        print(f'dropped {item}')
    print(f'wrote {args.dst}')


if __name__ == '__main__':
    main()
