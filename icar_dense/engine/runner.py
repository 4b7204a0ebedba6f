"""``ICARRunner``: mmengine's ``Runner`` with the safety behaviours.

Named in every ``configs/_base_/default_runtime_*.py``
(``runner_type = 'ICARRunner'``; ``tools/train.py`` and ``tools/test.py``
build through ``RUNNERS`` when it is set).  Against mmengine 0.10.7's
``Runner`` it

* refuses an empty dataset naming its class and annotation file
  (:meth:`build_dataloader`; mmengine failed with "need at least one array
  to concatenate", or its ``InfiniteSampler`` looped forever);
* resumes (``resume=True`` without ``load_from``) from the newest
  ``iter_*``/``epoch_*`` checkpoint when the ``last_checkpoint`` pointer is
  missing, empty or stale (:meth:`load_or_resume`);
* reads local checkpoints (``load_from``, ``--resume``) with
  :func:`icar_dense.checkpoint.load_checkpoint_file`: a pickle that would run
  code is refused with a message naming the file and the way to re-save it;
* writes checkpoints to local folders atomically (``atomic_local`` file
  backend, :mod:`icar_dense.engine.fileio`) unless a backend is given;
* adds ``did you mean`` to an unknown model or dataset type;
* formats its config text with yapf once (:class:`FormatOnceConfig`):
  mmengine's ``Runner`` asks for ``cfg.pretty_text`` four times while it
  starts and once per checkpoint, about a second each for a detection
  config, every time with the same text.

A process that only imports ``icar_dense`` keeps mmengine's ``Runner``
unchanged.
"""
import os.path as osp

from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import CheckpointLoader, Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from icar_dense.checkpoint.io import load_checkpoint_file
from .build_errors import suggest_types
from .fileio import atomic_backend_args
from .safety import check_not_empty, empty_dataset_error, \
    find_latest_checkpoint

# what numpy says when mmengine serialises a dataset without samples
_EMPTY_SERIALISED = 'need at least one array to concatenate'


def read_checkpoint(filename, map_location='cpu'):
    """A checkpoint file's content: local files through the safe loader."""
    if '://' not in str(filename):
        return load_checkpoint_file(osp.expanduser(filename), map_location)
    return CheckpointLoader.load_checkpoint(filename, map_location)


class FormatOnceConfig(Config):
    """mmengine's ``Config`` whose ``pretty_text`` runs yapf once per
    content: the unformatted text (cheap) is built each time and the
    formatted one is reused while it is unchanged, so the text is the one
    mmengine's ``Config.pretty_text`` returns."""

    @property
    def pretty_text(self):
        if not self._format_python_code:
            return Config.pretty_text.fget(self)
        object.__setattr__(self, '_format_python_code', False)
        try:
            raw = Config.pretty_text.fget(self)
        finally:
            object.__setattr__(self, '_format_python_code', True)
        cached = self.__dict__.get('_formatted')
        if cached is not None and cached[0] == raw:
            return cached[1]
        text = Config.pretty_text.fget(self)
        object.__setattr__(self, '_formatted', (raw, text))
        return text

    @classmethod
    def of(cls, cfg):
        """``cfg`` (a ``Config``) as a ``FormatOnceConfig`` sharing its
        content (``Runner`` deep-copies it)."""
        other = cls.__new__(cls)
        other.__dict__.update(cfg.__dict__)
        other.__dict__.pop('_formatted', None)
        return other


@RUNNERS.register_module()
class ICARRunner(Runner):
    """``Runner`` with the checks and safe I/O of icar_dense (see module)."""

    def __init__(self, *args, cfg=None, **kwargs):
        if type(cfg) is Config:  # a subclass of someone else's: as it is
            cfg = FormatOnceConfig.of(cfg)
        super().__init__(*args, cfg=cfg, **kwargs)

    def build_model(self, model):
        with suggest_types():
            return super().build_model(model)

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        """``Runner.build_dataloader`` refusing a dataset without samples."""
        dataset_cfg = (dataloader.get('dataset')
                       if isinstance(dataloader, dict) else None)
        with suggest_types():
            try:
                loader = Runner.build_dataloader(
                    dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
            except ValueError as err:
                if dataset_cfg is None or _EMPTY_SERIALISED not in str(err):
                    raise
                raise empty_dataset_error(dataset_cfg) from err
        check_not_empty(loader.dataset)
        return loader

    def load_or_resume(self) -> None:
        """mmengine's, with :func:`find_latest_checkpoint` for ``--resume``
        without a file: a bad ``last_checkpoint`` pointer falls back to the
        newest checkpoint of the work dir."""
        if self._has_loaded or not self._resume or \
                self._load_from is not None:
            return super().load_or_resume()
        resume_from = find_latest_checkpoint(self.work_dir)
        self.logger.info(
            f'Auto resumed from the latest checkpoint {resume_from}.')
        if resume_from is not None:
            self.resume(resume_from)
            self._has_loaded = True

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):
        """mmengine's ``Runner.load_checkpoint`` reading through
        :func:`read_checkpoint` (``resume`` calls it too)."""
        checkpoint = read_checkpoint(filename, map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def save_checkpoint(self, out_dir, filename, file_client_args=None,
                        *args, backend_args=None, **kwargs):
        """mmengine's, writing local files with the ``atomic_local``
        backend when no backend is given."""
        backend_args = atomic_backend_args(out_dir, backend_args,
                                           file_client_args)
        return super().save_checkpoint(out_dir, filename, file_client_args,
                                       *args, backend_args=backend_args,
                                       **kwargs)


__all__ = ['FormatOnceConfig', 'ICARRunner', 'read_checkpoint']
