"""Evaluate (or just predict with) a checkpoint from an icar_dense config.

Same interface as mmdet/mmseg/mmaction2's ``tools/test.py``: their flags
(``--out``, ``--dump``, ``--show``, ``--show-dir``, ``--wait-time``,
``--interval``, ``--tta``, ``--cfg-options``, ``--launcher``) work for all
three tasks; a flag whose meaning differs between them (mmseg's ``--out``
folder) is refused with the name of the flag that does it here.  The
arguments are parsed before anything heavy is imported, so ``--help`` and a
wrong argument answer at once.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

PICKLE_SUFFIXES = ('.pkl', '.pickle')


def has_display():
    """Whether ``--show`` can open a window on this machine."""
    if sys.platform in ('win32', 'darwin'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def build_parser():
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a model', allow_abbrev=False)
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the dir to save metrics and logs (default: '
        'work_dirs/<config name>); each run writes into '
        'WORK_DIR/<timestamp>/')
    parser.add_argument(
        '--out', '--dump', dest='out', metavar='FILE.pkl',
        help='dump the raw predictions to this pickle file, before any '
        "metric runs (mmdet's --out, mmaction2's --dump); for mmseg's --out "
        '(a folder of prediction maps) use --out-dir')
    parser.add_argument(
        '--out-dir',
        help='segmentation: write each prediction as a label-map PNG into '
        "this folder (mmseg's --out)")
    parser.add_argument(
        '--show', action='store_true',
        help='show each prediction picture in a window (needs a display; '
        'on a machine without one use --show-dir)')
    parser.add_argument(
        '--show-dir',
        help='write prediction pictures into this folder; a relative DIR '
        'is taken relative to WORK_DIR/<timestamp>/ (as in mmdet) for all '
        'three tasks')
    parser.add_argument(
        '--wait-time', type=float, default=2,
        help='seconds each --show window stays open (default 2)')
    parser.add_argument(
        '--interval', type=int, default=1,
        help='draw every N-th test sample with --show/--show-dir '
        '(default 1: every sample)')
    parser.add_argument(
        '--vocabulary',
        help='class list to evaluate/predict with instead of the trained '
        'one: a .txt (one class per line, "name: description" allowed), a '
        '.json, a comma-separated list, or a precomputed embeddings file')
    parser.add_argument(
        '--tta', action='store_true',
        help='test-time augmentation: the tta_model / tta_pipeline of the '
        'config (flip + multi-scale for detection and segmentation)')
    parser.add_argument(
        '--inmap', action='store_true',
        help='also evaluate with InMaP vision proxies learned on the test '
        'set (reported as inmap/<metric>); options: the config\'s '
        'inmap=dict(...) or --cfg-options inmap.iters=...')
    parser.add_argument(
        '--allow-partial-checkpoint', action='store_true',
        help='run even when the checkpoint leaves tensors of the model at '
        'their initialisation (listed in a warning); without it that is an '
        'error (config: allow_partial_checkpoint = True)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.endswith(PICKLE_SUFFIXES):
        parser.error(
            f'--out/--dump {args.out!r}: the raw predictions are written as '
            'a pickle file (.pkl), as with mmdet\'s --out and mmaction2\'s '
            "--dump; mmseg's --out DIR (prediction maps as PNG files) is "
            f'--out-dir {args.out} here')
    if args.show and not has_display():
        parser.error(
            '--show opens a window per picture, but this machine has no '
            'display (DISPLAY is not set); use --show-dir DIR to save the '
            'pictures instead')
    if args.interval < 1:
        parser.error(f'--interval must be >= 1, got {args.interval}')
    if args.wait_time < 0:
        parser.error(f'--wait-time must be >= 0, got {args.wait_time}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    # heavy imports only once the arguments are known to be good
    import icar_dense  # noqa: F401  (applies compat fixes)
    from icar_dense.engine import (adapt_to_machine, dry_run_exit,
                                   end_distributed, merge_cfg_options,
                                   setup_work_dir, task_scope)
    from icar_dense.engine.build_errors import suggest_types
    from icar_dense.engine.checkpoint_check import enable_checkpoint_check
    from icar_dense.engine.preflight import build_components, check_config
    from icar_dense.engine.testing import (enable_result_dump,
                                           enable_seg_out_dir,
                                           enable_show_dir, enable_tta,
                                           use_vocabulary)
    from icar_dense.inmap import enable_inmap
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options)
    task_scope(cfg)
    setup_work_dir(cfg, args.work_dir)
    cfg.load_from = args.checkpoint
    enable_checkpoint_check(cfg, 'test', args.allow_partial_checkpoint)
    if args.tta:
        enable_tta(cfg)
    if args.show or args.show_dir:
        enable_show_dir(cfg, args.show_dir, show=args.show,
                        wait_time=args.wait_time, interval=args.interval)
    if args.out:
        enable_result_dump(cfg, args.out)
    if args.out_dir:
        enable_seg_out_dir(cfg, args.out_dir)
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

    # an unknown type: "did you mean" with the closest registered names
    with suggest_types():
        runner = (Runner.from_cfg(cfg)
                  if 'runner_type' not in cfg else RUNNERS.build(cfg))
        build_components(runner, 'test')  # dataset, loop, evaluator
        runner.test()
        del runner  # its DDP wrapper holds the process group
    end_distributed()


if __name__ == '__main__':
    main()
