"""Test on several splits and report the mean and std over them.

Zero-shot video protocols (Kinetics-600 novel classes, UCF101, HMDB51) test
one model on three splits, each with its own videos and its own class list,
and report top-1 as mean +- std over the splits.  ``MultiSplitTestLoop``
does that inside one ``tools/test.py`` run (the model is built and loaded
once):

.. code-block:: python

    test_cfg = dict(
        type='MultiSplitTestLoop',
        splits=[
            dict(name='split1', ann_file='.../ucf101_val_split_1_videos.txt'),
            dict(name='split2', ann_file='.../ucf101_val_split_2_videos.txt'),
            dict(name='split3', ann_file='.../ucf101_val_split_3_videos.txt'),
        ])

Each split's keys (other than ``name``) override ``test_dataloader.dataset``
(``ann_file``, ``classes``, ``data_prefix``, ...).  Before a split runs, the
model's vocabulary is set to the split dataset's classes
(``dataset.vocabulary`` of :class:`ZeroShotVideoDataset`, else its
``metainfo['classes']``) through the model's ``set_vocabulary``; a fresh
evaluator is built per split.

Returned / logged metrics: ``<split>/<metric>`` for every split and
``<metric>_mean`` / ``<metric>_std`` (population std, ``ddof=0``, as the
spread of the three reported numbers).  The whole table is written to
``<work_dir>/<result_file>`` (default ``multi_split_results.json``).

A single split is one evaluation (the iCAR authors' protocols: UCF101 /
HMDB51 on split 1 only, Kinetics-600 novel classes as one test over all of
them): the loop still gives the model the dataset's classes, but reports the
metrics under their plain names (``acc/top1``, also ``<split>/acc/top1``),
with no mean / std, and the JSON holds ``metrics`` instead of ``mean`` /
``std``.
"""
import copy
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np
from mmaction.registry import LOOPS
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop

from icar_dense.checkpoint import write_json_atomic


def summarize_splits(per_split: Dict[str, Dict[str, float]]) -> OrderedDict:
    """``<split>/<metric>`` plus ``<metric>_mean`` / ``<metric>_std``.

    Only metrics present in every split are aggregated.  With one split
    (one evaluation) the metrics keep their plain names instead of getting
    a mean and a zero std.
    """
    flat = OrderedDict()
    if len(per_split) == 1:
        flat.update(next(iter(per_split.values())))
    for name, metrics in per_split.items():
        for key, value in metrics.items():
            flat[f'{name}/{key}'] = value
    if len(per_split) == 1:
        return flat
    common = None
    for metrics in per_split.values():
        keys = [
            k for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating, np.integer))
        ]
        common = keys if common is None else [k for k in common if k in keys]
    for key in common or []:
        values = np.array([float(m[key]) for m in per_split.values()])
        flat[f'{key}_mean'] = float(values.mean())
        flat[f'{key}_std'] = float(values.std(ddof=0))
    return flat


@LOOPS.register_module()
class MultiSplitTestLoop(TestLoop):
    """``TestLoop`` over several dataset splits, with mean +- std.

    Args:
        runner (Runner): The runner.
        dataloader (dict): ``test_dataloader`` config; each split overrides
            keys of its ``dataset``.
        evaluator (dict | list): ``test_evaluator`` config, rebuilt per split.
        splits (list[dict]): One dict per split: optional ``name`` (default
            ``split<i>``) and dataset overrides.
        fp16 (bool): Autocast the test step. Defaults to False.
        result_file (str): JSON written into the work dir.
    """

    def __init__(self,
                 runner,
                 dataloader: dict,
                 evaluator,
                 splits: Sequence[dict],
                 fp16: bool = False,
                 result_file: str = 'multi_split_results.json') -> None:
        if not isinstance(dataloader, dict):
            raise TypeError('MultiSplitTestLoop: test_dataloader must be a '
                            'config dict (each split rebuilds it), got a '
                            f'{type(dataloader).__name__}')
        if not splits or not all(isinstance(s, dict) for s in splits):
            raise ValueError('MultiSplitTestLoop: `splits` must be a '
                             'non-empty list of dicts (dataset overrides, '
                             'optionally with a name)')
        self.splits = []
        names = set()
        for i, split in enumerate(splits):
            split = dict(split)
            name = split.pop('name', f'split{i + 1}')
            if name in names:
                raise ValueError(
                    f'MultiSplitTestLoop: duplicate split name {name!r}')
            names.add(name)
            self.splits.append((name, split))
        self.dataloader_cfg = copy.deepcopy(dataloader)
        self.evaluator_cfg = copy.deepcopy(evaluator)
        self.result_file = result_file
        # the first split is built now so that hooks see a dataloader
        super().__init__(runner, self._split_dataloader_cfg(0),
                         copy.deepcopy(evaluator), fp16)

    def _split_dataloader_cfg(self, index: int) -> dict:
        cfg = copy.deepcopy(self.dataloader_cfg)
        if 'dataset' not in cfg:
            raise KeyError('MultiSplitTestLoop: test_dataloader has no '
                           '`dataset`')
        cfg['dataset'].update(copy.deepcopy(self.splits[index][1]))
        return cfg

    def _model(self):
        model = self.runner.model
        return model.module if is_model_wrapper(model) else model

    def _use_split_classes(self, dataset) -> int:
        vocabulary = getattr(dataset, 'vocabulary', None)
        if vocabulary is None:
            classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
            vocabulary = list(classes) if classes else None
        if vocabulary is None:
            return -1  # the dataset names no classes: keep the model's
        model = self._model()
        if not hasattr(model, 'set_vocabulary'):
            raise TypeError(
                f'MultiSplitTestLoop: the model {type(model).__name__} has '
                'no set_vocabulary(); use a model with a text classifier '
                '(e.g. ICARRecognizer3D) or splits without classes')
        model.set_vocabulary(vocabulary)
        return len(vocabulary)

    def run(self) -> dict:
        runner = self.runner
        runner.call_hook('before_test')
        runner.call_hook('before_test_epoch')
        runner.model.eval()
        per_split = OrderedDict()
        for index, (name, _) in enumerate(self.splits):
            if index > 0:
                self.dataloader = runner.build_dataloader(
                    self._split_dataloader_cfg(index), seed=runner.seed)
                self.evaluator = runner.build_evaluator(
                    copy.deepcopy(self.evaluator_cfg))
            dataset = self.dataloader.dataset
            metainfo = getattr(dataset, 'metainfo', None)
            if metainfo is not None:
                self.evaluator.dataset_meta = metainfo
                runner.visualizer.dataset_meta = metainfo
            num_classes = self._use_split_classes(dataset)
            print_log(
                f'MultiSplitTestLoop: {name}: {len(dataset)} videos'
                f'{f", {num_classes} classes" if num_classes > 0 else ""}',
                logger='current')
            self.test_loss.clear()
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
            per_split[name] = self.evaluator.evaluate(len(dataset))
            print_log(
                f'MultiSplitTestLoop: {name}: ' + ', '.join(
                    f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}'
                    for k, v in per_split[name].items()),
                logger='current')
        metrics = summarize_splits(per_split)
        self._report(per_split, metrics)
        runner.call_hook('after_test_epoch', metrics=metrics)
        runner.call_hook('after_test')
        return metrics

    def _report(self, per_split: Dict[str, dict], metrics: dict) -> None:
        if len(per_split) == 1:
            self._report_single(per_split)
            return
        lines: List[str] = []
        means = [k for k in metrics if k.endswith('_mean')]
        for key in means:
            base = key[:-len('_mean')]
            values = ', '.join(f'{name} {per_split[name][base]:.4f}'
                               for name in per_split)
            lines.append(f'{base}: {metrics[key]:.4f} +- '
                         f'{metrics[base + "_std"]:.4f} over '
                         f'{len(per_split)} splits ({values})')
        print_log(
            'MultiSplitTestLoop results\n' + '\n'.join(lines),
            logger='current')
        self._write_results(
            splits=per_split,
            mean={k[:-len('_mean')]: metrics[k]
                  for k in means},
            std={
                k[:-len('_mean')]: metrics[k[:-len('_mean')] + '_std']
                for k in means
            },
            std_ddof=0)

    def _report_single(self, per_split: Dict[str, dict]) -> None:
        name, metrics = next(iter(per_split.items()))
        print_log(
            f'MultiSplitTestLoop results (one evaluation: {name})\n' +
            '\n'.join(f'{key}: {_fmt(value)}'
                      for key, value in metrics.items()),
            logger='current')
        self._write_results(splits=per_split, metrics=dict(metrics))

    def _write_results(self, **results) -> None:
        """The result file (rank 0): the checkpoint tested and ``results``."""
        if is_main_process():
            path = osp.join(self.runner.work_dir, self.result_file)
            write_json_atomic(
                dict(checkpoint=self.runner.cfg.get('load_from'), **results),
                path)
            print_log(f'MultiSplitTestLoop: wrote {path}', logger='current')


def _fmt(value) -> str:
    return f'{value:.4f}' if isinstance(value, float) else str(value)
