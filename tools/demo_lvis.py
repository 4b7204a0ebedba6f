"""`make demo`: open-vocabulary LVIS detection end to end, on the CPU.

1. Builds a small dataset in the LVIS v1 json format from real photographs
   that ship with installed packages (scikit-image, matplotlib; see
   demo/README.md): hand-drawn boxes from demo/lvis_demo_annotations.json,
   masks from OpenCV's GrabCut inside each box, LVIS v1 category ids and
   names, ``neg_category_ids`` listing every demo category absent from an
   image (the images are exhaustively annotated for the 14 categories).
2. Trains configs/det/demo_lvis_tiny.py (the LVIS open-vocabulary config,
   shrunk) on the base categories (frequency 'f'/'c') with two processes
   through tools/dist_train.sh (gloo on the CPU).
3. Evaluates with tools/test.py (mmdet's LVISMetric: AP, AP_r = novel,
   AP_c, AP_f, box and mask) and writes the prediction pictures
   (--show-dir); reports the LVIS AP over the base and over the novel
   categories (lvis-api's LVISEval restricted to each group).
4. Runs tools/demo.py on a photograph with a vocabulary given on the
   command line.

    python tools/demo_lvis.py [--work-dir work_dirs/demo_lvis] [--iters 250]
        [--grabcut-iters 5]
"""
import argparse
import json
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ANNOTATIONS = osp.join(REPO, 'demo', 'lvis_demo_annotations.json')
CONFIG = osp.join(REPO, 'configs', 'det', 'demo_lvis_tiny.py')


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('--work-dir', default='work_dirs/demo_lvis')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config)')
    parser.add_argument('--procs', type=int, default=2,
                        help='training processes (tools/dist_train.sh)')
    parser.add_argument('--port', default='29533')
    parser.add_argument('--grabcut-iters', type=int, default=5,
                        help='GrabCut iterations per mask (default 5; '
                        'fewer: rougher masks, a faster dataset build)')
    args = parser.parse_args()
    if args.grabcut_iters < 1:
        parser.error(f'--grabcut-iters must be >= 1, got {args.grabcut_iters}')
    return args


# ---------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------
def photo_roots():
    import matplotlib
    import skimage.data
    return dict(
        skimage=osp.dirname(skimage.data.__file__),
        matplotlib=osp.join(osp.dirname(matplotlib.__file__), 'mpl-data',
                            'sample_data'))


def grabcut_mask(image, box, iterations=5):
    """Foreground of GrabCut initialised with the box (uint8 0/1 mask)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, x2), min(height, y2)
    mask = np.zeros((height, width), np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(image, mask, (x1, y1, x2 - x1, y2 - y1), bgd, fgd,
                    iterations, cv2.GC_INIT_WITH_RECT)
        fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    except cv2.error:  # e.g. a box covering the whole image
        fg = np.zeros_like(mask)
    if fg.sum() < 0.05 * (x2 - x1) * (y2 - y1):
        # GrabCut found (almost) nothing: keep the box itself
        fg[:] = 0
        fg[y1:y2, x1:x2] = 1
    return fg


def mask_to_polygons(mask, min_area=20.0):
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polygons = [c.reshape(-1).astype(float).tolist() for c in contours
                if cv2.contourArea(c) >= min_area and len(c) >= 3]
    return polygons


def build_dataset(data_root, grabcut_iters=5):
    """Write images and LVIS v1 jsons (train and val) under ``data_root``
    (masks from ``grabcut_iters`` GrabCut iterations in each box)."""
    with open(ANNOTATIONS) as f:
        spec = json.load(f)
    roots = photo_roots()
    categories = sorted(spec['categories'], key=lambda c: c['id'])
    name2id = {c['name']: c['id'] for c in categories}
    images, annotations = [], []
    for index, entry in enumerate(spec['images']):
        source, name = entry['file'].split(':')
        path = osp.join(roots[source], name)
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'demo photo {path} not found (is '
                                    f'{source} installed?)')
        image_id = index + 1
        height, width = image.shape[:2]
        present = set()
        for cls, box in entry['objects']:
            if cls not in name2id:
                raise KeyError(f'{ANNOTATIONS}: {entry["file"]} names {cls!r}'
                               ', which is not one of its categories')
            mask = grabcut_mask(image, box, grabcut_iters)
            polygons = mask_to_polygons(mask)
            x1, y1, x2, y2 = box
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id,
                     category_id=name2id[cls],
                     bbox=[float(x1), float(y1), float(x2 - x1),
                           float(y2 - y1)],
                     area=float(mask.sum()), segmentation=polygons))
            present.add(name2id[cls])
        images.append(
            dict(id=image_id, width=width, height=height,
                 file_name=f'{image_id:012d}.jpg', source=entry['file'],
                 neg_category_ids=sorted(set(name2id.values()) - present),
                 not_exhaustive_category_ids=[], image=image))
    for split in ('train', 'val'):
        folder = osp.join(data_root, f'{split}2017')
        os.makedirs(folder, exist_ok=True)
        entries = []
        for img in images:
            cv2.imwrite(osp.join(folder, img['file_name']), img['image'],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            entry = {k: v for k, v in img.items()
                     if k not in ('image', 'file_name')}
            entry['coco_url'] = ('http://images.cocodataset.org/'
                                 f'{split}2017/{img["file_name"]}')
            entry['license'] = 0
            entries.append(entry)
        cats = []
        for c in categories:
            anns = [a for a in annotations if a['category_id'] == c['id']]
            cats.append(
                dict(id=c['id'], name=c['name'], synonyms=[c['name']],
                     frequency=c['frequency'], **{'def': c['def']},
                     image_count=len({a['image_id'] for a in anns}),
                     instance_count=len(anns)))
        ann_file = osp.join(data_root, 'annotations',
                            f'lvis_demo_{split}.json')
        os.makedirs(osp.dirname(ann_file), exist_ok=True)
        with open(ann_file, 'w') as f:
            json.dump(
                dict(info=dict(description='icar_dense LVIS-format demo, '
                               'see demo/README.md'),
                     licenses=[dict(id=0, name='see demo/README.md')],
                     images=entries, annotations=annotations,
                     categories=cats), f)
    return categories, len(images), len(annotations)


# ---------------------------------------------------------------------------
# running the tools
# ---------------------------------------------------------------------------
def run(cmd, log_file, env=None):
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    full_env.setdefault('HF_HUB_OFFLINE', '1')
    full_env['PYTHON'] = sys.executable
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    full_env.update(env or {})
    if cmd[0] == 'python':  # this interpreter (the venv's under make demo)
        cmd = [sys.executable] + cmd[1:]
    start = time.time()
    with open(log_file, 'w') as log:
        proc = subprocess.run(cmd, cwd=REPO, env=full_env, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = f.read()[-4000:]
        sys.exit(f'demo: {" ".join(cmd)} failed ({proc.returncode}); log '
                 f'{log_file}:\n{tail}')
    return time.time() - start


def group_ap(val_ann, predictions, cat_groups):
    """LVIS AP (box and mask) of each category group, with lvis-api."""
    import icar_dense  # noqa: F401  (lvis 0.5.3 on current numpy)
    from lvis import LVIS, LVISEval, LVISResults
    gt = LVIS(val_ann)
    label_to_cat = sorted(gt.get_cat_ids())
    results = {'bbox': [], 'segm': []}
    for pred in predictions:
        inst = pred['pred_instances']
        for k in range(len(inst['labels'])):
            x1, y1, x2, y2 = [float(v) for v in inst['bboxes'][k]]
            common = dict(image_id=int(pred['img_id']),
                          category_id=label_to_cat[int(inst['labels'][k])],
                          score=float(inst['scores'][k]))
            results['bbox'].append(dict(common, bbox=[x1, y1, x2 - x1,
                                                      y2 - y1]))
            if 'masks' in inst:
                rle = dict(inst['masks'][k])
                if isinstance(rle['counts'], bytes):
                    rle['counts'] = rle['counts'].decode()
                results['segm'].append(dict(common, segmentation=rle))
    table = {}
    for iou_type, dets in results.items():
        if not dets:
            continue
        dt = LVISResults(gt, dets, max_dets=300)
        for group, cat_ids in cat_groups.items():
            evaluator = LVISEval(gt, dt, iou_type)
            evaluator.params.cat_ids = sorted(cat_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            table[f'{iou_type}_AP_{group}'] = float(evaluator.results['AP'])
    return table


def main():
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines in order
    started = time.time()
    work = osp.abspath(args.work_dir)
    data_root = osp.join(work, 'data') + '/'
    if osp.isdir(osp.join(work, 'train')):
        shutil.rmtree(osp.join(work, 'train'))
    os.makedirs(work, exist_ok=True)
    categories, n_img, n_ann = build_dataset(data_root, args.grabcut_iters)
    base = [c for c in categories if c['frequency'] in ('f', 'c')]
    novel = [c for c in categories if c['frequency'] == 'r']
    print(f'[1/4] dataset: {n_img} photos, {n_ann} hand-drawn boxes with '
          f'GrabCut masks, {len(base)} base + {len(novel)} novel (rare) '
          f'LVIS categories -> {data_root}')

    data_opts = [
        f'data_root={data_root}',
        f'train_dataloader.dataset.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'val_evaluator.ann_file={data_root}annotations/lvis_demo_val.json',
        f'test_evaluator.ann_file={data_root}annotations/lvis_demo_val.json',
        'model.roi_head.bbox_head.train_classes.ann_file='
        f'{data_root}annotations/lvis_demo_val.json',
        'model.roi_head.bbox_head.text_classifier.vocabulary='
        f'{data_root}annotations/lvis_demo_val.json',
    ]
    if args.iters:
        data_opts += [f'train_cfg.max_iters={args.iters}',
                      f'train_cfg.val_interval={args.iters}',
                      f'default_hooks.checkpoint.interval={args.iters}']
    train_dir = osp.join(work, 'train')
    seconds = run(['bash', 'tools/dist_train.sh', CONFIG, str(args.procs),
                   '--work-dir', train_dir, '--cfg-options', *data_opts],
                  osp.join(work, 'train.log'), env=dict(PORT=args.port))
    checkpoint = sorted(
        (f for f in os.listdir(train_dir) if f.startswith('iter_')),
        key=lambda f: int(f[5:-4]))[-1]
    checkpoint = osp.join(train_dir, checkpoint)
    print(f'[2/4] trained with {args.procs} processes (gloo) in '
          f'{seconds:.0f} s -> {checkpoint}')

    test_dir = osp.join(work, 'test')
    preds_file = osp.join(test_dir, 'predictions.pkl')
    seconds = run(['python', 'tools/test.py', CONFIG, checkpoint,
                   '--work-dir', test_dir, '--out', preds_file,
                   '--show-dir', 'pictures', '--cfg-options', *data_opts],
                  osp.join(work, 'test.log'))
    with open(osp.join(test_dir, 'metrics_test.json')) as f:
        metrics = json.load(f)['metrics']
    with open(preds_file, 'rb') as f:
        predictions = pickle.load(f)
    groups = group_ap(
        osp.join(data_root, 'annotations/lvis_demo_val.json'), predictions,
        dict(base=[c['id'] for c in base], novel=[c['id'] for c in novel]))
    pictures = sorted(
        osp.join(root, f) for root, _, files in os.walk(test_dir)
        for f in files if f.endswith('.jpg') and 'pictures' in root)
    print(f'[3/4] evaluated with the LVIS metric in {seconds:.0f} s:')
    for kind in ('bbox', 'segm'):
        base_ap = groups.get(f'{kind}_AP_base', float('nan'))
        novel_ap = groups.get(f'{kind}_AP_novel', float('nan'))
        print(f'      {kind}: AP {metrics.get(f"lvis/{kind}_AP")}  '
              f'AP_r (novel) {metrics.get(f"lvis/{kind}_APr")}  '
              f'AP_c {metrics.get(f"lvis/{kind}_APc")}  '
              f'AP_f {metrics.get(f"lvis/{kind}_APf")}  |  LVIS AP over '
              f'base classes {base_ap:.3f}, over novel classes '
              f'{novel_ap:.3f}')
    print(f'      {len(pictures)} prediction pictures in '
          f'{osp.dirname(pictures[0]) if pictures else test_dir}')
    with open(osp.join(work, 'demo_results.json'), 'w') as f:
        json.dump(dict(metrics=metrics, group_ap=groups,
                       checkpoint=checkpoint, pictures=pictures), f, indent=2)

    photo = osp.join(photo_roots()['skimage'], 'chelsea.png')
    out = osp.join(work, 'demo_open_vocabulary.jpg')
    run(['python', 'tools/demo.py', photo, CONFIG, checkpoint,
         '--vocabulary', 'cat,dog,person,cup', '--score-thr', '0.3',
         '--out-file', out, '--cfg-options', *data_opts],
        osp.join(work, 'demo.log'))
    print(f'[4/4] tools/demo.py with --vocabulary "cat,dog,person,cup" -> '
          f'{out}')
    print(f'make demo: done in {time.time() - started:.0f} s '
          f'(results in {work}/demo_results.json)')


if __name__ == '__main__':
    main()
