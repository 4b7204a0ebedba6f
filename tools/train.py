"""Train a detector, segmentor or recognizer from an icar_dense config.

Same interface as mmdet/mmseg/mmaction2's ``tools/train.py``; the registry
scope comes from the config's ``default_scope``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

import icar_dense  # noqa: E402,F401  (applies compat fixes, registers modules)
from icar_dense.engine import (adapt_to_machine, dry_run_exit,  # noqa: E402
                               enable_amp, local_rank_to_env,
                               merge_cfg_options, setup_work_dir, task_scope)
from icar_dense.engine.locks import hold_work_dir  # noqa: E402
from icar_dense.engine.preflight import (build_components,  # noqa: E402
                                         check_config)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by the actual batch size (auto_scale_lr in cfg)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in '
        'the work dir when no path is given')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value, e.g. '
        'train_cfg.max_iters=10 model.backbone.depths="[1,1,1,1]"')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    local_rank_to_env(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options)
    task_scope(cfg)
    setup_work_dir(cfg, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise KeyError(f'--auto-scale-lr: {args.config} has no '
                           'auto_scale_lr setting')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    adapt_to_machine(cfg)
    dry_run_exit(cfg, 'train')
    # unknown components / arguments: before anything is built or written
    check_config(cfg, 'train')
    # one training run per work dir (released when this process ends)
    lock = hold_work_dir(cfg.work_dir)
    try:
        runner = (Runner.from_cfg(cfg)
                  if 'runner_type' not in cfg else RUNNERS.build(cfg))
        build_components(runner, 'train')  # datasets, loops, optimizer
        runner.train()
    finally:
        if lock is not None:
            lock.release()


if __name__ == '__main__':
    main()
