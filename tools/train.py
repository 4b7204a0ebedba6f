"""Train a detector, segmentor or recognizer from an icar_dense config.

Same interface as mmdet/mmseg/mmaction2's ``tools/train.py`` (the union of
their flags: ``--amp``, ``--auto-scale-lr``, ``--resume [CKPT]``,
``--no-validate``, ``--seed``, ``--diff-rank-seed``, ``--deterministic``,
``--cfg-options``, ``--launcher``); the registry scope comes from the
config's ``default_scope``.  The arguments are parsed before anything heavy
is imported, so ``--help`` and a wrong argument answer at once.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def build_parser():
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Train a model', allow_abbrev=False)
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
        '--no-validate', action='store_true',
        help='do not validate during training (drops val_cfg, '
        'val_dataloader and val_evaluator, as mmaction2)')
    parser.add_argument(
        '--seed', type=int, default=None,
        help='random seed (randomness.seed of the config)')
    parser.add_argument(
        '--diff-rank-seed', action='store_true',
        help='a different seed on each rank (randomness.diff_rank_seed)')
    parser.add_argument(
        '--deterministic', action='store_true',
        help='deterministic cuDNN / torch algorithms '
        '(randomness.deterministic)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value, e.g. '
        'train_cfg.max_iters=10 model.backbone.depths="[1,1,1,1]"')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_randomness(cfg, args):
    """``--seed`` / ``--diff-rank-seed`` / ``--deterministic`` ->
    ``cfg.randomness`` (given flags override the config)."""
    given = {}
    if args.seed is not None:
        given['seed'] = args.seed
    if args.diff_rank_seed:
        given['diff_rank_seed'] = True
    if args.deterministic:
        given['deterministic'] = True
    if given:
        randomness = dict(cfg.get('randomness') or {})
        randomness.update(given)
        cfg.randomness = randomness
    return cfg


def main():
    args = parse_args()
    # heavy imports only once the arguments are known to be good
    import icar_dense  # noqa: F401  (applies compat fixes)
    from icar_dense.engine import (adapt_to_machine, dry_run_exit,
                                   enable_amp, end_distributed,
                                   merge_cfg_options, setup_work_dir,
                                   task_scope)
    from icar_dense.engine.build_errors import suggest_types
    from icar_dense.engine.checkpoint_check import enable_checkpoint_check
    from icar_dense.engine.locks import hold_work_dir
    from icar_dense.engine.preflight import build_components, check_config
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

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
    # load_from / --resume: one line of what was loaded and what starts
    # at its initialisation; an official iCAR file is mapped for detectors
    enable_checkpoint_check(cfg, 'train')
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    apply_randomness(cfg, args)
    adapt_to_machine(cfg)
    dry_run_exit(cfg, 'train')
    # unknown components / arguments: before anything is built or written
    check_config(cfg, 'train')
    # one training run per work dir (released when this process ends)
    lock = hold_work_dir(cfg.work_dir)
    try:
        # an unknown type: "did you mean" with the closest registered names
        with suggest_types():
            runner = (Runner.from_cfg(cfg)
                      if 'runner_type' not in cfg else RUNNERS.build(cfg))
            build_components(runner, 'train')  # datasets, loops, optimizer
            runner.train()
            del runner  # its DDP wrapper holds the process group
        end_distributed()
    finally:
        if lock is not None:
            lock.release()


if __name__ == '__main__':
    main()
