"""Evaluate (or just predict with) a checkpoint from an icar_dense config.

Same interface as mmdet/mmseg/mmaction2's ``tools/test.py``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

import icar_dense  # noqa: E402,F401  (applies compat fixes, registers modules)
from icar_dense.engine import (adapt_to_machine, local_rank_to_env,  # noqa
                               dry_run_exit, merge_cfg_options,
                               setup_work_dir, task_scope)
from icar_dense.engine.preflight import (build_components,  # noqa: E402
                                         check_config)
from icar_dense.engine.testing import (enable_result_dump,  # noqa: E402
                                       enable_show_dir, enable_tta,
                                       use_vocabulary)
from icar_dense.inmap import enable_inmap  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save metrics and logs')
    parser.add_argument(
        '--out', help='dump raw predictions to this pickle file')
    parser.add_argument(
        '--show-dir', help='write prediction pictures into this directory '
        '(relative to the work dir timestamp folder, like mmdet)')
    parser.add_argument(
        '--vocabulary',
        help='class list to evaluate/predict with instead of the trained '
        'one: a .txt (one class per line, "name: description" allowed), a '
        '.json, a comma-separated list, or a precomputed embeddings file')
    parser.add_argument('--tta', action='store_true', help='test-time aug')
    parser.add_argument(
        '--inmap', action='store_true',
        help='also evaluate with InMaP vision proxies learned on the test '
        'set (reported as inmap/<metric>); options: the config\'s '
        'inmap=dict(...) or --cfg-options inmap.iters=...')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value')
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
    cfg.load_from = args.checkpoint
    if args.tta:
        enable_tta(cfg)
    if args.show_dir:
        enable_show_dir(cfg, args.show_dir)
    if args.out:
        enable_result_dump(cfg, args.out)
    if args.vocabulary:
        use_vocabulary(cfg, args.vocabulary)
    enable_inmap(cfg, force=args.inmap)
    adapt_to_machine(cfg)
    dry_run_exit(cfg, 'test')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        # before the model and the dataset are built (minutes on LVIS)
        raise FileNotFoundError(
            f'checkpoint file not found: {args.checkpoint!r}')
    # unknown components / arguments: before anything is built or written
    # (no work-dir lock: logs and results go to a timestamped folder)
    check_config(cfg, 'test')

    runner = (Runner.from_cfg(cfg)
              if 'runner_type' not in cfg else RUNNERS.build(cfg))
    build_components(runner, 'test')  # dataset, loop, evaluator
    runner.test()


if __name__ == '__main__':
    main()
