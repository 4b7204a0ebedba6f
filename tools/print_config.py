"""Print the fully resolved config (after _base_ and --cfg-options)."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--save-path', help='also write it to this file')
    return parser.parse_args(argv)


def main():
    args = parse_args()
    import icar_dense  # noqa: F401  (compat fixes, lazy registration)
    from mmengine.config import Config
    from icar_dense.engine.runtime import merge_cfg_options
    cfg = Config.fromfile(args.config)
    # the same structure check as tools/train.py: what is printed is what runs
    merge_cfg_options(cfg, args.cfg_options)
    print(f'Config:\n{cfg.pretty_text}')
    if args.save_path:
        cfg.dump(args.save_path)
        print(f'saved to {args.save_path}')


if __name__ == '__main__':
    main()
