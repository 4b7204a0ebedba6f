"""Runner set-up shared by ``tools/train.py`` and ``tools/test.py``."""
import os
import os.path as osp
import warnings

import torch
from mmengine.config import Config

# The host library each config scope belongs to; used to pick the registries
# (and visualizers, metrics, datasets) a config's names resolve in.
KNOWN_SCOPES = ('mmdet', 'mmseg', 'mmaction')


def task_scope(cfg: Config) -> str:
    """The config's ``default_scope`` (mmdet, mmseg or mmaction)."""
    scope = cfg.get('default_scope', None)
    if scope is None:
        raise KeyError(
            f'config {cfg.filename!r} sets no default_scope: set it to one of '
            f'{KNOWN_SCOPES} (inherit a configs/_base_/default_runtime_*.py)')
    if scope not in KNOWN_SCOPES:
        raise ValueError(
            f'config {cfg.filename!r}: default_scope {scope!r} is not one of '
            f'the tasks icar_dense serves {KNOWN_SCOPES}')
    return scope


def adapt_to_machine(cfg: Config) -> Config:
    """Let a GPU config run on a machine without CUDA.

    Multi-process runs fall back to the gloo backend (nccl needs GPUs); the
    DDP wrapper gets no ``device_ids`` (see :mod:`icar_dense.compat`).
    """
    if torch.cuda.is_available() or cfg.get('launcher', 'none') == 'none':
        return cfg
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        warnings.warn('no CUDA device: distributed backend nccl -> gloo')
        dist_cfg['backend'] = 'gloo'
    return cfg


def setup_work_dir(cfg: Config, work_dir: str = None) -> Config:
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(cfg.filename))[0])
    return cfg


def enable_amp(cfg: Config) -> Config:
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper == 'AmpOptimWrapper':
        return cfg
    if optim_wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, '
                         f'the config has {optim_wrapper!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'
    return cfg


def local_rank_to_env(local_rank):
    if 'LOCAL_RANK' not in os.environ and local_rank is not None:
        os.environ['LOCAL_RANK'] = str(local_rank)


def merge_cfg_options(cfg: Config, options) -> Config:
    """``--cfg-options`` merge that also honours a changed ``custom_imports``.

    ``Config.fromfile`` imports ``custom_imports`` before the command-line
    options are merged; modules added on the command line are imported here.
    """
    if options:
        cfg.merge_from_dict(options)
        imports = cfg.get('custom_imports')
        if imports:
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**imports)
    return cfg


def dry_run_exit(cfg: Config, tool: str) -> None:
    """Stop after the config is resolved when ``ICAR_DRY_RUN=1``.

    The docs check (tests/test_docs.py) runs every documented command this
    way: arguments parse, the config and its ``_base_`` files load and the
    overrides apply, without training on data the test machine lacks.
    """
    if os.environ.get('ICAR_DRY_RUN') == '1':
        print(f'[dry-run] {tool}: {cfg.filename} resolved '
              f'(default_scope={cfg.get("default_scope")}, '
              f'work_dir={cfg.get("work_dir")})')
        raise SystemExit(0)
