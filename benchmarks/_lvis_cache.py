# Copyright (c) icar_dense contributors. All rights reserved.
"""The on-disk data of ``bench_lvis_eval.py``: the synthetic LVIS annotation
files and the cached per-image predictions (boxes, scores, labels and mask
RLEs, 256 images per ``.npz``, in ``work_dirs/benchmarks/lvis_eval``), and
the data samples mmdet's test loop would hand the metric.
"""
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import _common as C  # noqa: E402
import _lvis_synth as S  # noqa: E402

__all__ = ['ann_file', 'cache_dir', 'prediction_cache', 'predictions',
           'data_sample']


def ann_file(num_images: int, seed: int, procs: int = 0) -> str:
    """The ground-truth file of the first ``num_images`` images (cached;
    ``procs`` helper processes draw it)."""
    path = osp.join(C.work_dir('lvis_eval'),
                    f'lvis_synth_{num_images}_seed{seed}_pool{S.POOL}.json')
    if not osp.isfile(path):
        tmp = path + f'.{os.getpid()}.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(S.dataset(num_images, seed, procs), f)
        os.replace(tmp, path)
    return path


CHUNK = 256


def cache_dir(seed: int) -> str:
    return osp.join(C.work_dir('lvis_eval'),
                    f'predictions_seed{seed}_pool{S.POOL}')


def write_chunk(job):
    """Predictions (and their mask RLEs) of images [start, stop) -> .npz."""
    start, stop, seed, path = job
    import numpy as np

    from icar_dense.evaluation.lvis_metric import compress_rle_counts
    cats = S.categories(seed)
    boxes, scores, labels, sizes, blobs, lengths = [], [], [], [], [], []
    for i in range(start, stop):
        _, _, pred = S.image(i, cats, seed, with_anns=False)
        counts, offsets = S.ellipse_runs(pred['bboxes'], pred['height'],
                                         pred['width'])
        blob, boff = compress_rle_counts(counts, offsets)
        boxes.append(pred['bboxes'])
        scores.append(pred['scores'])
        labels.append(pred['labels'].astype(np.int32))
        sizes.append((pred['height'], pred['width']))
        blobs.append(blob)
        lengths.append(np.diff(boff))
    tmp = path + '.tmp.npz'
    np.savez(tmp, bboxes=np.stack(boxes), scores=np.stack(scores),
             labels=np.stack(labels), sizes=np.array(sizes, np.int64),
             rles=np.frombuffer(b''.join(blobs), np.uint8),
             rle_lengths=np.concatenate(lengths))
    os.replace(tmp, path)


def prediction_cache(num_images: int, seed: int, procs: int) -> float:
    """Write the predictions of the first ``num_images`` images (once;
    ``procs`` helper processes); the seconds it took (0: cached).  Only the
    drawn ones (``S.POOL``) are written: the others repeat them."""
    folder = cache_dir(seed)
    os.makedirs(folder, exist_ok=True)
    jobs = []
    for start in range(0, min(num_images, S.POOL), CHUNK):
        path = osp.join(folder, f'{start:06d}.npz')
        stop = start + CHUNK
        if not osp.isfile(path):
            jobs.append((start, stop, seed, path))
    if not jobs:
        return 0.0
    t0 = time.perf_counter()
    if procs > 1:
        import multiprocessing as mp
        with mp.get_context('fork').Pool(procs) as pool:
            list(pool.imap_unordered(write_chunk, jobs))
    else:
        for job in jobs:
            write_chunk(job)
    return round(time.perf_counter() - t0, 1)


def predictions(indices, seed):
    """Yield ``(index, pred)`` from the cache; ``pred['rles']`` =
    (blob, offsets) of the image's 300 masks (image ``index`` repeats the
    drawn image ``index % S.POOL``)."""
    import numpy as np
    loaded = None
    for index in sorted(indices):
        src = index % S.POOL
        start = src // CHUNK * CHUNK
        if loaded is None or loaded[0] != start:
            with np.load(osp.join(cache_dir(seed), f'{start:06d}.npz')) as z:
                data = {key: z[key] for key in z.files}
            ends = np.concatenate(([0], np.cumsum(data['rle_lengths'])))
            loaded = (start, data, ends, data['rles'].tobytes())
        _, data, ends, blob = loaded
        j = src - start
        per = data['bboxes'].shape[1]
        h, w = data['sizes'][j].tolist()
        off = ends[j * per:(j + 1) * per + 1]
        yield index, dict(
            bboxes=data['bboxes'][j], scores=data['scores'][j],
            labels=data['labels'][j].astype(np.int64), height=h,
            width=w, rles=(blob[off[0]:off[-1]], off - off[0]))


def data_sample(index: int, pred: dict, with_masks: bool) -> dict:
    """What mmdet's test loop hands the metric (``to_dict()`` form)."""
    import torch
    inst = dict(
        bboxes=torch.from_numpy(pred['bboxes']),
        scores=torch.from_numpy(pred['scores']),
        labels=torch.from_numpy(pred['labels']))
    if with_masks:
        blob, offsets = pred['rles']
        size = [pred['height'], pred['width']]
        inst['masks'] = [
            dict(size=size, counts=blob[offsets[k]:offsets[k + 1]])
            for k in range(len(offsets) - 1)
        ]
    return dict(img_id=index + 1, ori_shape=(pred['height'], pred['width']),
                pred_instances=inst)
