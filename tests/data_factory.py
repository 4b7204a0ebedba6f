"""Tiny datasets in the real on-disk formats, built from real photographs.

The photographs ship with installed packages under open licences
(scikit-image's data module: CC0 / public domain per its docstrings;
scikit-learn's china.jpg and flower.jpg: CC-BY 2.0), so tests need no
download.  Label maps are derived from the photographs' colours, so they
follow real image structure rather than random noise.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np

PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
          'motorcycle_left.png', 'retina.jpg')


def photo_paths():
    import skimage.data
    import sklearn.datasets
    skimage_dir = osp.dirname(skimage.data.__file__)
    sklearn_dir = osp.join(osp.dirname(sklearn.datasets.__file__), 'images')
    paths = [osp.join(skimage_dir, name) for name in PHOTOS]
    paths += [osp.join(sklearn_dir, 'china.jpg'),
              osp.join(sklearn_dir, 'flower.jpg')]
    return [p for p in paths if osp.exists(p)]


def load_photo(index, size=None):
    """A real RGB photo (uint8 HxWx3, BGR like cv2), optionally resized."""
    paths = photo_paths()
    image = cv2.imread(paths[index % len(paths)], cv2.IMREAD_COLOR)
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def colour_labels(image, num_classes):
    """Segment a photo into ``num_classes`` colour clusters (k-means)."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(pixels, num_classes, None, criteria, 2,
                                    cv2.KMEANS_PP_CENTERS)
    # order clusters by brightness so the mapping is stable across images
    order = np.argsort(np.argsort(centres.sum(1)))
    return order[labels.reshape(image.shape[:2])].astype(np.uint8)


def make_ade20k(root, num_train=4, num_val=2, size=(64, 64), num_classes=5):
    """ADE20K layout: images/{training,validation}/*.jpg and
    annotations/{...}/*.png with 0 = ignore and classes 1..num_classes
    (loaded with ``reduce_zero_label=True``)."""
    for split, count, offset in (('training', num_train, 0),
                                 ('validation', num_val, num_train)):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            image = load_photo(offset + i, size)
            label = colour_labels(image, num_classes) + 1
            label[:2, :2] = 0  # a few "other" pixels, ignored after reduction
            name = f'ADE_{split}_{i:08d}'
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), image)
            cv2.imwrite(osp.join(ann_dir, name + '.png'), label)
    return root


def _box_from_mask(mask):
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _polygon_from_mask(mask):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    return [contour.reshape(-1).astype(float).tolist()]


def make_coco(root, categories, num_images=4, size=(96, 96), split='train',
              objects_per_image=2, lvis=False):
    """COCO (or LVIS v1) instance json + images from real photos.

    Each object is the largest connected region of one colour cluster of the
    photo, with its polygon and box; categories are assigned in turn.

    Args:
        categories (list[dict]): ``{'id', 'name'}`` (+ ``'frequency'`` for
            LVIS, one of 'f', 'c', 'r').
        lvis (bool): write LVIS v1 fields (``coco_url``-style file names,
            ``neg_category_ids``, ``not_exhaustive_category_ids``).
    """
    img_dir = osp.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(num_images):
        image = load_photo(i, size)
        file_name = f'{i:012d}.jpg'
        cv2.imwrite(osp.join(img_dir, file_name), image)
        entry = dict(id=i + 1, width=size[0], height=size[1],
                     file_name=file_name)
        if lvis:
            entry.update(coco_url=f'http://images.cocodataset.org/{split}2017/'
                         f'{file_name}', neg_category_ids=[],
                         not_exhaustive_category_ids=[])
        images.append(entry)
        clusters = colour_labels(image, objects_per_image + 1)
        for k in range(objects_per_image):
            mask = (clusters == k).astype(np.uint8)
            n, comp, stats, _ = cv2.connectedComponentsWithStats(mask)
            if n <= 1:
                continue
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            mask = (comp == largest).astype(np.uint8)
            if mask.sum() < 16:
                continue
            category = categories[(i * objects_per_image + k) %
                                  len(categories)]
            annotations.append(
                dict(id=ann_id, image_id=i + 1, category_id=category['id'],
                     bbox=_box_from_mask(mask),
                     segmentation=_polygon_from_mask(mask),
                     area=float(mask.sum()), iscrowd=0))
            ann_id += 1
    cats = []
    for c in categories:
        cat = dict(id=c['id'], name=c['name'])
        if lvis:
            cat.update(frequency=c.get('frequency', 'f'),
                       synonyms=[c['name']], def_=None)
            cat['def'] = c.get('def', f'a {c["name"]}')
            cat.pop('def_')
            cat['image_count'] = 1
            cat['instance_count'] = 1
        cats.append(cat)
    ann_file = osp.join(root, f'annotations/instances_{split}.json')
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=cats), f)
    return ann_file


def write_json(path, data):
    """Write ``data`` as json; return the path as a string."""
    os.makedirs(osp.dirname(str(path)) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f)
    return str(path)


def edit_json(src, dst, edit):
    """Copy a json file through ``edit(data)`` (which changes it in place);
    return ``dst`` as a string."""
    with open(src) as f:
        data = json.load(f)
    edit(data)
    return write_json(dst, data)


def make_video(path, num_frames=16, size=(64, 48), photo=0):
    """A short mp4 (mp4v) of a crop moving over a real photo."""
    image = load_photo(photo, (size[0] * 2, size[1] * 2))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 8,
                             size)
    assert writer.isOpened(), f'OpenCV cannot write mp4v to {path}'
    for t in range(num_frames):
        writer.write(np.ascontiguousarray(
            image[t:t + size[1], 2 * t:2 * t + size[0]]))
    writer.release()
    return str(path)


def make_lvis_sized_json(path, num_images=20000, num_annotations=250000,
                         num_categories=1203, seed=0):
    """An annotation file the size of LVIS v1 val (no images): 20k images,
    250k annotations with polygons, 1203 categories with frequencies and
    the per-image fields of LVIS AP.  For timing the dataset checks."""
    rng = np.random.RandomState(seed)
    freqs = ('f', 'c', 'r')
    cats = [dict(id=i + 1, name=f'class_{i:04d}', synonyms=[f'class_{i:04d}'],
                 frequency=freqs[i % 3], image_count=1, instance_count=1,
                 **{'def': f'the definition of class {i}'})
            for i in range(num_categories)]
    images = []
    for i in range(num_images):
        name = f'{i + 1:012d}.jpg'
        images.append(dict(
            id=i + 1, width=640, height=480, file_name=name,
            coco_url=f'http://images.cocodataset.org/val2017/{name}',
            neg_category_ids=rng.randint(1, num_categories, 3).tolist(),
            not_exhaustive_category_ids=[]))
    image_ids = rng.randint(1, num_images + 1, num_annotations)
    cat_ids = rng.randint(1, num_categories + 1, num_annotations)
    xy = rng.uniform(0, 400, (num_annotations, 2)).round(2)
    wh = rng.uniform(2, 200, (num_annotations, 2)).round(2)
    annotations = []
    for k in range(num_annotations):
        x, y = xy[k].tolist()
        w, h = wh[k].tolist()
        annotations.append(dict(
            id=k + 1, image_id=int(image_ids[k]), category_id=int(cat_ids[k]),
            bbox=[x, y, w, h], area=round(w * h, 2),
            segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    return write_json(path, dict(images=images, annotations=annotations,
                                 categories=cats))


def pipeline_steps(pipeline):
    """The transforms of a pipeline in order, with the loading transforms
    that ``SafeLoad`` wraps listed in its place (configs wrap decoding)."""
    steps = []
    for step in pipeline:
        if step.get('type') == 'SafeLoad':
            steps.extend(pipeline_steps(step['transforms']))
        else:
            steps.append(step)
    return steps
