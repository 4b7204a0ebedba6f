# Copyright (c) icar_dense contributors. All rights reserved.
"""FastLVISMetric with several ranks: each matches its own images, rank 0
accumulates (``icar_dense/evaluation/lvis_shards.py``).

The ranks are 2 gloo processes; their metrics must equal one process on the
same samples (lvis-api equality of the one-process path is tested in
``test_lvis_metric.py``), the sampler's padding must be dropped as
``collect_results`` drops it, and an error on one rank must reach every rank.
"""
import itertools
import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
from test_lvis_metric import _samples, make_problem

from conftest import REPO
from icar_dense.evaluation.lvis_shards import kept_indices


@pytest.mark.parametrize('lengths,size', [
    ((3, 3), 6), ((3, 3), 5), ((4, 4, 4), 10), ((3, 2), 5), ((0, 2), 1),
    ((5, 1, 3), 7), ((2, 2), 0), ((2, 2), 9)])
def test_kept_indices_are_what_collect_results_keeps(lengths, size):
    # mmengine's collect_results: zip_longest of the ranks' lists, the
    # first `size` kept
    tagged = [[(rank, i) for i in range(n)] for rank, n in enumerate(lengths)]
    kept = [t for t in itertools.chain.from_iterable(
        itertools.zip_longest(*tagged)) if t is not None][:size]
    for rank in range(len(lengths)):
        expected = [i for r, i in kept if r == rank]
        assert kept_indices(list(lengths), rank, size).tolist() == expected


# imports before init_process_group, as in the tools: a module imported
# after it can keep the group alive (torch.distributed.fsdp, which mmengine's
# runner imports, takes dist.group.WORLD as a default argument), and a group
# alive when Python shuts down can abort the process (end_distributed)
WORKER = r'''
import json, pickle, sys
import torch.distributed as dist
import icar_dense  # noqa
from icar_dense.engine import end_distributed
from icar_dense.evaluation.lvis_metric import FastLVISMetric
rank, world, port, problem, out = (int(sys.argv[1]), int(sys.argv[2]),
                                   sys.argv[3], sys.argv[4], sys.argv[5])
dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                        rank=rank, world_size=world)
with open(problem, 'rb') as f:
    p = pickle.load(f)
metric = FastLVISMetric(ann_file=p['ann_file'], metric=['bbox', 'segm'],
                        collect_dir=p['collect_dir'], prefix='lvis')
for sample in p['shards'][rank]:
    metric.process({}, [sample])
try:
    res = dict(metrics=metric.evaluate(p['size']),
               results={k: {kk: float(vv) for kk, vv in v.items()}
                        for k, v in metric.last_results.items()})
except Exception as exc:
    res = dict(error=f'{type(exc).__name__}: {exc}')
with open(out, 'w') as f:
    json.dump(res, f)
end_distributed()
'''


def _run_ranks(tmp_path, shards, size, ann_file):
    problem = tmp_path / 'problem.pkl'
    with open(problem, 'wb') as f:
        pickle.dump(dict(shards=shards, size=size, ann_file=ann_file,
                         collect_dir=str(tmp_path / 'collect')), f)
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    procs, outs = [], []
    for rank in range(len(shards)):
        outs.append(tmp_path / f'rank{rank}.json')
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(rank), str(len(shards)),
             str(port), str(problem), str(outs[-1])], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    return [json.loads(o.read_text()) for o in outs]


def _one_process(ann_file, samples):
    from icar_dense.evaluation.lvis_metric import FastLVISMetric
    metric = FastLVISMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    for sample in samples:
        metric.process({}, [sample])
    return metric.evaluate(len(samples)), metric.last_results


@pytest.fixture(scope='module')
def problem(tmp_path_factory):
    dataset, preds = make_problem(seed=5)
    ann_file = str(tmp_path_factory.mktemp('lvis_shards') / 'val.json')
    with open(ann_file, 'w') as f:
        json.dump(dataset, f)
    return ann_file, list(_samples(preds))


def test_two_ranks_equal_one_process_with_padding(problem, tmp_path):
    ann_file, samples = problem
    # an odd number: the sampler pads rank 1 with the first image (249 of
    # the evaluated detections: counted twice, the numbers would differ)
    size = len(samples) - 1 + len(samples) % 2
    # mmengine's DefaultSampler: rank r takes r, r + 2, ... of the padded
    # index list, the padding repeating the first indices
    padded = list(range(size)) + list(range(size % 2))
    assert len(padded) > size
    shards = [[samples[i] for i in padded[r::2]] for r in range(2)]
    ranks = _run_ranks(tmp_path, shards, size, ann_file)
    expected, expected_results = _one_process(ann_file, samples[:size])
    assert 'lvis/bbox_APr' in expected
    for res in ranks:
        assert 'error' not in res, res
        assert res['metrics'] == expected
    # rank 0 holds the unrounded numbers: equal to one process' (the same
    # arithmetic on the same detections, sorted the same way)
    for kind, values in ranks[0]['results'].items():
        for key, value in values.items():
            assert value == pytest.approx(float(expected_results[kind][key]),
                                          abs=1e-12), (kind, key)


def test_rank_without_images_and_error_on_one_rank(problem, tmp_path):
    ann_file, samples = problem
    # rank 1 processed nothing: same numbers as one process
    ranks = _run_ranks(tmp_path, [samples[:3], []], 3, ann_file)
    expected, _ = _one_process(ann_file, samples[:3])
    assert [r['metrics'] for r in ranks] == [expected, expected]
    # a label outside the vocabulary on rank 1: every rank raises (none is
    # left waiting), rank 0 names the rank and the cause
    bad = dict(samples[1], pred_instances=dict(samples[1]['pred_instances']))
    labels = bad['pred_instances']['labels'].clone()
    labels[0] = 10**6
    bad['pred_instances']['labels'] = labels
    ranks = _run_ranks(tmp_path, [[samples[0]], [bad]], 2, ann_file)
    assert all('error' in r for r in ranks), ranks
    assert 'rank 1' in ranks[0]['error'], ranks[0]
    assert ranks[1]['error'].startswith('ValueError: labels in'), ranks[1]


def test_missing_masks_fail_as_in_one_process(problem, tmp_path):
    # the check for 'segm' without masks looks at every rank's predictions:
    # images without masks beside images with them fail on the first
    # detection without a mask, in one process as on the rank that has them
    ann_file, samples = problem
    bare = [dict(s, pred_instances={k: v for k, v in
                                    s['pred_instances'].items()
                                    if k != 'masks'}) for s in samples[2:4]]
    with pytest.raises(RuntimeError, match='no mask for detection'):
        _one_process(ann_file, [samples[0], bare[0]])
    ranks = _run_ranks(tmp_path, [samples[:1], bare[:1]], 2, ann_file)
    assert all('error' in r for r in ranks), ranks
    assert ranks[1]['error'].startswith(
        'RuntimeError: no mask for detection'), ranks[1]
    # no rank has masks: every rank names that cause
    with pytest.raises(KeyError, match='have no masks'):
        _one_process(ann_file, bare)
    ranks = _run_ranks(tmp_path, [bare[:1], bare[1:]], 2, ann_file)
    assert all("metric 'segm' but the predictions have no masks" in
               r.get('error', '') for r in ranks), ranks
