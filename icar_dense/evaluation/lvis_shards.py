# Copyright (c) icar_dense contributors. All rights reserved.
"""Multi-process LVIS evaluation in which every rank matches its own images.

mmengine's ``BaseMetric.evaluate`` gathers the results of all ranks on rank
0, which then evaluates the whole test set alone while the other ranks wait.
For :class:`~icar_dense.evaluation.lvis_metric.FastLVISMetric` the
per-image part -- which detections count, their IoUs and lvis-api's
matching (:func:`~icar_dense.evaluation.lvis_eval.match_lvis`) -- depends
only on each image's own detections and annotations, so every rank runs it
on the images it processed and only its result travels: a few numbers and
the match codes per evaluated detection (no boxes, no mask RLEs).  Rank 0
accumulates and summarises (:func:`accumulate_lvis`), and every rank returns
the same metrics, as with ``BaseMetric.evaluate``.

The samples the distributed sampler pads are dropped as mmengine's
``collect_results`` drops them (:func:`kept_indices`), so the numbers equal
those of one process.  An error on any rank is raised on every rank (no rank
is left waiting in a collective).
"""
from typing import List

import numpy as np
from mmengine.dist import (all_gather_object, broadcast_object_list,
                           collect_results, get_dist_info)

from .lvis_eval import accumulate_lvis

__all__ = ['kept_indices', 'evaluate_sharded']


def kept_indices(lengths: List[int], rank: int, size: int) -> np.ndarray:
    """The indices of rank ``rank``'s results that ``collect_results``
    keeps: it interleaves the ranks' lists (``zip_longest``) and keeps the
    first ``size`` (the rest are the sampler's padding).

    Item ``i`` of rank ``r`` lands at ``sum_q min(L_q, i)`` plus the ranks
    before ``r`` whose lists are longer than ``i``.
    """
    lengths = np.asarray(lengths, np.int64)
    i = np.arange(int(lengths[rank]))
    pos = np.minimum(lengths[:, None], i[None, :]).sum(0) + \
        (lengths[:rank, None] > i[None, :]).sum(0)
    return np.flatnonzero(pos < size)


def evaluate_sharded(metric, size: int) -> dict:
    """``metric.evaluate(size)`` with the matching done by every rank.

    ``metric`` provides ``has_masks() -> bool``, ``match_shard(records,
    any_masks) -> dict`` (per metric kind: the :func:`match_lvis` result and
    its timings, and ``num`` detections) and ``metrics_from_matched(parts)
    -> dict`` (rank 0).
    """
    rank, world = get_dist_info()
    shards = all_gather_object((len(metric.results), metric.has_masks()))
    lengths = [n for n, _ in shards]
    records = [metric.results[i] for i in kept_indices(lengths, rank, size)]
    error, part = None, None
    try:
        part = metric.match_shard(records, any(m for _, m in shards))
    except Exception as exc:  # re-raised below, once every rank knows
        error = exc
    note = None if error is None else \
        f'rank {rank}: {type(error).__name__}: {error}'
    parts = collect_results([dict(part=part, error=note)], world,
                            metric.collect_device, tmpdir=metric.collect_dir)
    box: list = [None]
    if rank == 0:
        errors = [p['error'] for p in parts if p['error']]
        if errors:
            box = [dict(error='; '.join(errors))]
        else:
            try:
                box = [dict(metrics=metric.metrics_from_matched(
                    [p['part'] for p in parts]))]
            except Exception as exc:  # re-raised below on every rank
                error = exc
                box = [dict(error=f'rank 0: {type(exc).__name__}: {exc}')]
        del parts
    broadcast_object_list(box)
    metric.results.clear()
    outcome = box[0]
    if 'error' in outcome:
        if error is not None:
            raise error
        raise RuntimeError(f'{type(metric).__name__}: evaluation failed on '
                           f'another rank: {outcome["error"]}')
    metrics = outcome['metrics']
    if metric.prefix:
        metrics = {f'{metric.prefix}/{k}': v for k, v in metrics.items()}
    return metrics


def merge_matched(parts: List[dict], kind: str) -> List[dict]:
    """The non-empty :func:`match_lvis` results of ``kind`` in ``parts``."""
    return [p['matched'][kind] for p in parts
            if kind in p['matched'] and len(p['matched'][kind]['key'])]


def accumulate_parts(gt, parts: List[dict], kind: str, timings: dict):
    """:func:`accumulate_lvis` of the ranks' results of ``kind``; an empty
    one stands in when no rank evaluated a detection."""
    matched = merge_matched(parts, kind) or [parts[0]['matched'][kind]]
    return accumulate_lvis(gt, matched, timings)
