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


def end_distributed() -> None:
    """Destroy the default process group once a tool's run has succeeded.

    A process that reaches interpreter shutdown with a gloo process group
    alive can abort after its work is done (SIGABRT, ``terminate called
    without an active exception``): a gloo worker thread releases the last
    collective's tensors late, and a thread taking the GIL while Python
    finalizes is terminated (about 1 two-rank run in 25 on a loaded 2-core
    machine). Destroying the group joins those threads while Python is
    alive, as torch's documentation asks at the end of ``main``; the group
    lives on while anything holds it, so the caller drops its runner first
    (the DDP wrapper holds the group) and the reference cycles are
    collected here. Not called when a run fails: destroying waits for
    queued collectives, which a dead peer never completes.
    """
    import gc

    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def local_rank_to_env(local_rank):
    if 'LOCAL_RANK' not in os.environ and local_rank is not None:
        os.environ['LOCAL_RANK'] = str(local_rank)


class ConfigOptionError(ValueError):
    """A ``--cfg-options`` key that does not fit the config's structure."""


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def check_cfg_option(cfg: Config, key: str, value) -> None:
    """Refuse an option whose path runs through a value that is not a dict
    (``model.backbone.depths.x=1`` where ``depths`` is a list), a list index
    that does not exist, or that replaces a whole dict section by a plain
    value (``model.backbone=swin``).

    mmengine merges such options into a config that fails much later, deep
    in a library (``unsupported operand type(s) for +: 'int' and 'str'``),
    or with a message about base configs the user never wrote.
    """
    node = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    parts = key.split('.')
    for depth, part in enumerate(parts):
        here = '.'.join(parts[:depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, dict):
            if part not in node:
                return  # a new key: preflight.check_config names unknown ones
            child = node[part]
        elif isinstance(node, (list, tuple)):
            parent = '.'.join(parts[:depth])
            if not part.isdigit():
                raise ConfigOptionError(
                    f'--cfg-options {key}: {parent} is a list of '
                    f'{len(node)} in the config, so its items are addressed '
                    f'by index ({parent}.0.KEY=...), not by {part!r}; or set '
                    f'the whole list: {parent}="[...]"')
            if int(part) >= len(node):
                raise ConfigOptionError(
                    f'--cfg-options {key}: {parent} has {len(node)} items '
                    f'(indices 0 to {len(node) - 1}), no item {part}')
            child = node[int(part)]
        else:
            parent = '.'.join(parts[:depth])
            raise ConfigOptionError(
                f'--cfg-options {key}: {parent} is {_describe(node)} '
                f'({type(node).__name__}) in the config, not a section with '
                f'keys; set it directly: {parent}=VALUE')
        if last and isinstance(child, dict) and value is not None and \
                not isinstance(value, dict):
            fields = ', '.join(list(child)[:8])
            raise ConfigOptionError(
                f'--cfg-options {key}={value!r}: {here} is a section '
                f'({fields}) in the config; set one of its keys ({here}.KEY='
                f'VALUE), or None to remove it')
        node = child


def merge_cfg_options(cfg: Config, options) -> Config:
    """``--cfg-options`` merge that also honours a changed ``custom_imports``.

    Every option is checked against the config's structure first
    (:func:`check_cfg_option`). ``Config.fromfile`` imports
    ``custom_imports`` before the command-line options are merged; modules
    added on the command line are imported here.
    """
    if options:
        for key, value in options.items():
            check_cfg_option(cfg, key, value)
        cfg.merge_from_dict(options)
        imports = cfg.get('custom_imports')
        if imports:
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**imports)
    return cfg


def dry_run_exit(cfg: Config, tool: str) -> None:
    """Stop after the config is resolved when ``ICAR_DRY_RUN=1``.

    The docs check (tests/tools/test_docs.py) runs every documented command
    this way: arguments parse, the config and its ``_base_`` files load and the
    overrides apply, without training on data the test machine lacks.  With
    ``ICAR_DRY_RUN_DUMP=FILE`` the resolved config is also written to FILE
    (tests/tools/test_cli_flags.py checks what each flag changes that way).
    """
    if os.environ.get('ICAR_DRY_RUN') == '1':
        dump = os.environ.get('ICAR_DRY_RUN_DUMP')
        if dump:  # the config as the tool would run it (tests of flags)
            cfg.dump(dump)
        print(f'[dry-run] {tool}: {cfg.filename} resolved '
              f'(default_scope={cfg.get("default_scope")}, '
              f'work_dir={cfg.get("work_dir")})')
        raise SystemExit(0)
