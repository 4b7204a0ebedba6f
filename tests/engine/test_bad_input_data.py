"""Bad input data never gives a silent wrong result (issue 15, classes 4-7).

Each case feeds one kind of bad dataset file, segmentation map, video list or
vocabulary file to a public entry point -- ``tools/test.py`` /
``tools/train.py`` (run in this process by ``helpers_faults.run_script``,
or as a command) or a dataset built from a public config the way those
tools build it -- and checks the exception, that its message names the file
and the record / line / key at fault, and that nothing that looks like a
result was written.
"""
import json
import logging
import os
import os.path as osp
import re

import cv2
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import icar_dense  # noqa: F401
from conftest import REPO, run_tool, write_lines
from data_factory import (edit_json, make_ade20k, make_coco, make_video,
                          write_json)
from helpers_faults import run_script
from icar_dense.datasets import AnnotationError, DataLoadError

# one torch thread and no config formatting: tests/conftest.py
pytestmark = pytest.mark.usefixtures('fast_cpu')

# LVIS v1 ids / names / frequencies (as in test_det_ov.py)
LVIS_CATS = [(3, 'airplane', 'f'), (80, 'cow', 'f'), (225, 'cat', 'c'),
             (378, 'dog', 'c'), (422, 'elephant', 'r'),
             (173, 'bus_(vehicle)', 'r')]


class Records(logging.Handler):
    """Collects the messages of mmengine's current logger."""

    def __enter__(self):
        from mmengine.logging import MMLogger
        self.logger = MMLogger.get_current_instance()
        self.messages = []
        self.logger.addHandler(self)
        return self

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def no_results(work_dir, *files):
    """Nothing that looks like a result: no metrics file under the work
    dir, none of ``files``, no checkpoint."""
    found = []
    for root, _, names in os.walk(str(work_dir)):
        found += [osp.join(root, n) for n in names
                  if n.startswith('metrics_') or n.endswith('.pth')
                  or n.endswith('.pkl')]
    found += [f for f in files if osp.exists(f)]
    assert not found, f'a failed run left results: {found}'


# ----------------------------------------------------------------------------
# detection data
# ----------------------------------------------------------------------------
def _lvis_categories():
    return [dict(id=i, name=n, frequency=f,
                 **{'def': f'a {n.split("_")[0]} in a photograph'})
            for i, n, f in LVIS_CATS]


def _coco_categories():
    from mmdet.datasets import CocoDataset
    ids = (list(range(1, 12)) + list(range(13, 26)) + [27, 28] +
           list(range(31, 45)) + list(range(46, 66)) + [67, 70] +
           list(range(72, 83)) + list(range(84, 91)))
    names = CocoDataset.METAINFO['classes']
    cats = [dict(id=i, name=n) for i, n in zip(ids, names)]
    # make_coco annotates the first categories of the list: put some base
    # and novel classes of the OVR-CNN split first, keep the file id-sorted
    first = ['person', 'airplane', 'car', 'bus', 'cat', 'dog']
    return sorted([c for c in cats if c['name'] in first],
                  key=lambda c: first.index(c['name'])) + [
                      c for c in cats if c['name'] not in first]


def _sort_categories(path, lvis_folder=None):
    def edit(data):
        data['categories'].sort(key=lambda c: c['id'])
        if lvis_folder is not None:
            for image in data['images']:
                image['coco_url'] = ('http://images.cocodataset.org/' +
                                     lvis_folder + '/' + image['file_name'])
    edit_json(path, path, edit)
    return path


@pytest.fixture(scope='module')
def det(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('det_data'))
    coco_root = osp.join(root, 'coco')
    coco = _sort_categories(make_coco(coco_root, _coco_categories(),
                                      num_images=4, size=(64, 64),
                                      split='val'))
    lvis_root = osp.join(root, 'lvis')
    lvis = _sort_categories(
        make_coco(lvis_root, _lvis_categories(), num_images=4, size=(64, 64),
                  split='val', lvis=True), lvis_folder='val')
    return dict(root=root, coco_root=coco_root, coco=coco,
                lvis_root=lvis_root, lvis=lvis)


def det_test_set(config, root, ann_file, img_dir='val/'):
    """The test dataset of a public detection config on other files, built
    as tools/test.py builds it."""
    cfg = Config.fromfile(osp.join(REPO, config))
    loader = cfg.test_dataloader
    dataset = loader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    dataset.update(data_root=root, ann_file=ann_file,
                   data_prefix=dict(img=img_dir))
    loader.update(num_workers=0, persistent_workers=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return Runner.build_dataloader(loader).dataset


COCO_CFG = 'configs/det/icar_swint_maskrcnn_coco_1x.py'
DEMO_LVIS = osp.join(REPO, 'configs/det/demo_lvis_tiny.py')
OV_COCO_CFG = 'configs/det/icar_swint_coco_ov.py'


def _bad_coco(det, tmp_path, edit):
    return edit_json(det['coco'], tmp_path / 'instances_val.json', edit)


def _raises_annotation_error(config, det, path, *needles):
    with pytest.raises(AnnotationError) as err:
        det_test_set(config, det['coco_root'], path)
    text = str(err.value)
    assert path in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return err.value


def test_good_files_build(det):
    """The checked datasets accept the well-formed files (the premise)."""
    for config in (COCO_CFG, OV_COCO_CFG):
        dataset = det_test_set(config, det['coco_root'], det['coco'])
        assert len(dataset) == 4
        assert dataset.degenerate_boxes['dropped'] == 0
    assert type(dataset).__name__ == 'OVCocoDataset'
    assert type(det_test_set(COCO_CFG, det['coco_root'], det['coco'])
                ).__name__ == 'ValidatedCocoDataset'


def test_duplicate_image_ids(det, tmp_path):
    """pycocotools would merge them: 3 of 4 images evaluated."""
    def edit(data):
        data['images'][3]['id'] = data['images'][1]['id']
    path = _bad_coco(det, tmp_path, edit)
    for config in (COCO_CFG, OV_COCO_CFG):
        err = _raises_annotation_error(
            config, det, path, 'images[1] and images[3]', "same 'id' 2",
            'merge')
        assert (err.record, err.field) == ('images[3]', 'id')


def test_duplicate_annotation_ids(det, tmp_path):
    def edit(data):
        data['annotations'][2]['id'] = data['annotations'][0]['id']
    path = _bad_coco(det, tmp_path, edit)
    _raises_annotation_error(COCO_CFG, det, path,
                             'annotations[0] and annotations[2]', "'id' 1")


def test_category_not_in_categories(det, tmp_path):
    def edit(data):
        data['annotations'][1]['category_id'] = 12  # no COCO category 12
    path = _bad_coco(det, tmp_path, edit)
    err = _raises_annotation_error(COCO_CFG, det, path, 'annotations[1]',
                                   'category_id 12', "'categories'")
    assert err.field == 'category_id'


def test_annotation_of_an_unknown_image(det, tmp_path):
    def edit(data):
        data['annotations'][0]['image_id'] = 99
        data['annotations'][3]['image_id'] = 98
    path = _bad_coco(det, tmp_path, edit)
    _raises_annotation_error(OV_COCO_CFG, det, path, 'annotations[0] (id 1)',
                             'image_id 99', "'images'",
                             '1 more annotations entries')


def test_image_without_height(det, tmp_path):
    def edit(data):
        del data['images'][2]['height']
    path = _bad_coco(det, tmp_path, edit)
    err = _raises_annotation_error(COCO_CFG, det, path, 'images[2] (id 3)',
                                   "no 'height'")
    assert err.field == 'height'


def test_malformed_box_and_missing_area(det, tmp_path):
    def three_numbers(data):
        data['annotations'][1]['bbox'] = [1, 2, 3]

    def no_area(data):
        del data['annotations'][4]['area']
    _raises_annotation_error(COCO_CFG, det,
                             _bad_coco(det, tmp_path, three_numbers),
                             'annotations[1]', "'bbox' [1, 2, 3]",
                             '4 finite numbers')
    _raises_annotation_error(COCO_CFG, det, _bad_coco(det, tmp_path, no_area),
                             'annotations[4]', "no 'area'")


def test_masks_needed_by_the_pipeline(det, tmp_path):
    """LoadAnnotations(with_mask=True) would fail with KeyError 'mask'."""
    def edit(data):
        data['annotations'][2]['segmentation'] = []
    path = _bad_coco(det, tmp_path, edit)
    _raises_annotation_error(COCO_CFG, det, path, 'annotations[2]',
                             "empty 'segmentation'", 'with_mask=True')


def test_json_syntax_error_names_the_line(det, tmp_path):
    path = tmp_path / 'instances_val.json'
    path.write_text('{"images": [\n {"id": 1,}\n]}')
    _raises_annotation_error(COCO_CFG, det, str(path), 'line 2 column',
                             'invalid JSON')


def test_degenerate_boxes_dropped_with_one_warning(det, tmp_path):
    def edit(data):
        anns = data['annotations']
        anns[0]['bbox'][2] = 0          # zero width
        anns[1]['bbox'][3] = -4         # negative height
        anns[2]['bbox'][2] = 0.5        # under 1 px
        anns[3]['bbox'][:2] = [500, 3]  # right of the 64 px image
    path = _bad_coco(det, tmp_path, edit)
    with Records() as log:
        dataset = det_test_set(COCO_CFG, det['coco_root'], path)
    warnings = [m for m in log.messages if 'degenerate' in m]
    assert len(warnings) == 1, log.messages
    assert path in warnings[0] and '4 of ' in warnings[0]
    assert '2 with zero or negative width or height' in warnings[0]
    assert '1 under 1 px' in warnings[0] and '1 outside their image' in \
        warnings[0]
    assert 'first: annotation id 1 of image id 1 bbox' in warnings[0]
    counts = dataset.degenerate_boxes
    assert counts['dropped'] == 4 and counts['total'] == len(
        json.load(open(path))['annotations'])
    kept = sum(len(dataset.get_data_info(i)['instances'])
               for i in range(len(dataset)))
    assert kept == counts['total'] - 4


# LVIS through tools/test.py: the public demo config on the tiny files ------
@pytest.fixture(scope='module')
def lvis_tool(det, tmp_path_factory):
    """A config inheriting configs/det/demo_lvis_tiny.py (the LVIS OV recipe
    at toy size) pointed at the tiny LVIS files, and a checkpoint of it."""
    folder = tmp_path_factory.mktemp('lvis_tool')

    def config(ann_file, name):
        good = det['lvis']
        lines = [
            f"_base_ = [{DEMO_LVIS!r}]",
            'model = dict(roi_head=dict(',
            '    bbox_head=dict(num_classes=6, train_classes=dict(',
            f'        ann_file={good!r}),',
            f'        text_classifier=dict(vocabulary={good!r})),',
            '    mask_head=dict(num_classes=6)))',
            'test_dataloader = dict(dataset=dict(',
            f"    data_root={det['lvis_root']!r}, ann_file={ann_file!r}))",
            f'test_evaluator = dict(ann_file={ann_file!r})',
            f'visualizer = dict(name={name!r})',
        ]
        return write_lines(folder / f'{name}.py', lines)

    cfg = Config.fromfile(config(det['lvis'], 'lvis_good'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)
    ckpt = str(folder / 'tiny_lvis.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=1)), ckpt)
    return dict(folder=folder, config=config, ckpt=ckpt)


def _lvis_test_fails(lvis_tool, det, tmp_path, edit, name):
    ann = edit_json(det['lvis'], tmp_path / 'lvis_val.json', edit)
    work = tmp_path / 'work'
    out = str(tmp_path / 'predictions.pkl')
    err = run_script('test.py', lvis_tool['config'](ann, name),
                     lvis_tool['ckpt'], '--work-dir', str(work), '--out',
                     out)
    assert isinstance(err, AnnotationError), repr(err)
    assert ann in str(err)
    no_results(work, out)
    return err


def test_lvis_test_set_without_neg_category_ids(lvis_tool, det, tmp_path):
    """LVIS AP needs them: refused before any inference (it used to fail in
    the evaluator after the whole test set, losing --out)."""
    def edit(data):
        for image in data['images']:
            del image['neg_category_ids']
    err = _lvis_test_fails(lvis_tool, det, tmp_path, edit, 'lvis_neg')
    assert "images[0] (id 1) has no 'neg_category_ids'" in str(err)
    assert '3 more images entries' in str(err) and 'LVIS AP' in str(err)


def test_lvis_test_set_without_not_exhaustive_ids(lvis_tool, det, tmp_path):
    def edit(data):
        data['images'][2]['not_exhaustive_category_ids'] = None
    err = _lvis_test_fails(lvis_tool, det, tmp_path, edit, 'lvis_nex')
    assert "images[2] (id 3) has 'not_exhaustive_category_ids' None" in str(
        err)


def test_lvis_image_without_width(lvis_tool, det, tmp_path):
    """mmdet raised a bare KeyError: 'width'."""
    def edit(data):
        del data['images'][1]['width']
    err = _lvis_test_fails(lvis_tool, det, tmp_path, edit, 'lvis_width')
    assert "images[1] (id 2) has no 'width'" in str(err)
    assert (err.record, err.field) == ('images[1]', 'width')


def test_lvis_training_set_needs_no_eval_fields(det, tmp_path):
    """The per-image LVIS AP fields are a test-set requirement only."""
    def edit(data):
        for image in data['images']:
            del image['neg_category_ids']
            del image['not_exhaustive_category_ids']
    ann = edit_json(det['lvis'], tmp_path / 'lvis_train.json', edit)
    from icar_dense.datasets import OVLVISV1Dataset
    dataset = OVLVISV1Dataset(ann_file=ann, data_root=det['lvis_root'],
                              data_prefix=dict(img=''), pipeline=[])
    assert len(dataset) == 4
    with pytest.raises(AnnotationError, match="no 'neg_category_ids'"):
        OVLVISV1Dataset(ann_file=ann, data_root=det['lvis_root'],
                        data_prefix=dict(img=''), pipeline=[],
                        test_mode=True)


def test_lvis_file_without_frequency_still_named(lvis_tool, det, tmp_path):
    def edit(data):
        del data['categories'][0]['frequency']
    ann = edit_json(det['lvis'], tmp_path / 'lvis_val.json', edit)
    err = run_script('test.py', lvis_tool['config'](ann, 'lvis_freq'),
                     lvis_tool['ckpt'], '--work-dir', str(tmp_path / 'w'))
    assert isinstance(err, KeyError) and ann in str(err)
    assert "'frequency'" in str(err)
    no_results(tmp_path / 'w')


# ----------------------------------------------------------------------------
# segmentation maps
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def seg(tmp_path_factory):
    from helpers_seg import make_icar_checkpoint, make_tokenizer
    root = tmp_path_factory.mktemp('seg_env')
    tok = make_tokenizer(str(root / 'tokenizer'))
    icar = make_icar_checkpoint(root / 'icar_official.pth', tok)
    return dict(root=root, tok=tok, icar=icar['path'])


def _ade_copy(tmp_path, split, edit):
    """The tiny ADE20K set with the first map of ``split`` edited."""
    root = make_ade20k(str(tmp_path / 'ade'), num_train=2, num_val=2)
    folder = osp.join(root, 'annotations', split)
    path = osp.join(folder, sorted(os.listdir(folder))[0])
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    cv2.imwrite(path, edit(label))
    return root, path


def _seg_config(seg, name, data_root, work_dir, tmp_path, **kwargs):
    from helpers_seg import shrink
    cfg = Config.fromfile(osp.join(REPO, 'configs/seg', name))
    object.__setattr__(cfg, '_format_python_code', False)
    cfg = shrink(cfg, data_root, str(work_dir), seg['icar'], seg['tok'],
                 **kwargs)
    path = str(tmp_path / f'seg_{osp.splitext(name)[0]}.py')
    cfg.dump(path)
    return path


def test_seg_map_of_the_wrong_size_at_test_time(seg, tmp_path):
    """tools/test.py: the metric used to fail with an IndexError on a shape
    mismatch, naming nothing."""
    def smaller(label):
        return cv2.resize(label, (48, 40), interpolation=cv2.INTER_NEAREST)
    root, bad = _ade_copy(tmp_path, 'validation', smaller)
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_zeroshot.py', root,
                         work, tmp_path)
    err = run_script('test.py', config, seg['icar'], '--work-dir', str(work))
    assert isinstance(err, DataLoadError), repr(err)
    assert err.path == bad and bad in str(err)
    assert '40x48 (HxW)' in str(err) and 'is 64x64' in str(err)
    no_results(work)


def test_seg_labels_beyond_the_classes_at_test_time(seg, tmp_path):
    """IoUMetric's histogram would drop such pixels without a word."""
    def beyond(label):
        label[10:20, 10:20] = 200  # ADE has 150 classes (+ 0 = other)
        return label
    root, bad = _ade_copy(tmp_path, 'validation', beyond)
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_zeroshot.py', root,
                         work, tmp_path)
    err = run_script('test.py', config, seg['icar'], '--work-dir', str(work))
    assert isinstance(err, DataLoadError), repr(err)
    assert bad in str(err) and 'labels 199' in str(err)
    assert 'outside the 150 classes' in str(err)
    assert 'reduce_zero_label' in str(err)
    no_results(work)


def test_seg_labels_beyond_the_classes_in_training(seg, tmp_path):
    """tools/train.py: refused at the first batch, no checkpoint."""
    def beyond(label):
        label[:8, :8] = 180
        return label
    root, bad = _ade_copy(tmp_path, 'training', beyond)
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_160k.py', root, work,
                         tmp_path)
    # the first map is among the first batch in every order (2 images, 2 per
    # batch)
    err = run_script('train.py', config, '--work-dir', str(work),
                     '--cfg-options', 'train_dataloader.batch_size=2')
    assert isinstance(err, DataLoadError), repr(err)
    assert bad in str(err) and 'labels 179' in str(err)
    no_results(work)


def test_seg_map_check_in_the_tta_pipeline(seg, tmp_path):
    def smaller(label):
        return label[:32]
    root, bad = _ade_copy(tmp_path, 'validation', smaller)
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_zeroshot.py', root,
                         work, tmp_path)
    err = run_script('test.py', config, seg['icar'], '--work-dir', str(work),
                     '--tta')
    assert isinstance(err, DataLoadError) and bad in str(err), repr(err)
    no_results(work)


def test_seg_ignore_index_and_class_subsets_pass(seg, tmp_path):
    """255 (ignore) and labels of ADE classes outside a metainfo subset are
    not errors: the test runs and writes its metrics."""
    def ignored(label):
        label[:5, :5] = 255
        label[5:10, 5:10] = 7  # ADE class 6, not in the 5-class subset
        return label
    root, _ = _ade_copy(tmp_path, 'validation', ignored)
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_zeroshot.py', root,
                         work, tmp_path)
    # run_script is made for failing runs: a normal end is its error
    with pytest.raises(AssertionError, match='did not fail'):
        run_script('test.py', config, seg['icar'], '--work-dir', str(work),
                   '--cfg-options', 'test_dataloader.dataset.indices=1')
    assert osp.isfile(osp.join(str(work), 'metrics_test.json'))


def test_seg_example_config_checks_its_own_classes(tmp_path):
    """configs/seg/example_custom_ov.py: labels beyond its 5 classes."""
    cfg = Config.fromfile(osp.join(REPO, 'configs/seg/example_custom_ov.py'))
    root = make_ade20k(str(tmp_path / 'streets'), num_train=1, num_val=1,
                       size=(32, 32))
    folder = osp.join(root, 'annotations', 'validation')
    bad = osp.join(folder, os.listdir(folder)[0])
    label = cv2.imread(bad, cv2.IMREAD_UNCHANGED)
    label[:4, :4] = 7  # label 6 after reduce_zero_label: a 7th class
    cv2.imwrite(bad, label)
    loader = cfg.test_dataloader
    loader.dataset.data_root = root
    loader.update(num_workers=0, persistent_workers=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = Runner.build_dataloader(loader).dataset
    with pytest.raises(DataLoadError) as err:
        dataset[0]
    assert bad in str(err.value) and 'outside the 5 classes' in str(err.value)


# ----------------------------------------------------------------------------
# video lists and video files
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('videos')
    names = [f'clip_{i}.mp4' for i in range(3)]
    for i, name in enumerate(names):
        make_video(folder / name, photo=i)
    (folder / 'empty.mp4').write_bytes(b'')
    (folder / 'notes.mp4').write_text('not a video, a text file\n' * 20)
    classes = write_lines(folder / 'classnames.txt',
                          ['apply eye makeup', 'biking', 'diving'])
    return dict(folder=str(folder), names=names, classes=classes)


def action_test_set(config, **dataset):
    cfg = Config.fromfile(osp.join(REPO, 'configs/action', config))
    loader = cfg.test_dataloader
    loader.dataset.update(dataset)
    loader.update(num_workers=0, persistent_workers=False)
    return cfg, loader


def _build(loader):
    with DefaultScope.overwrite_default_scope('mmaction'):
        return Runner.build_dataloader(loader).dataset


def test_zeroshot_list_label_outside_the_classes(videos, tmp_path):
    listing = write_lines(tmp_path / 'ucf101_val_split_1_videos.txt',
                          ['clip_0.mp4 0', 'clip_1.mp4 2', 'clip_2.mp4 3'])
    _, loader = action_test_set(
        'icar_swint_ucf101_zeroshot.py', ann_file=listing,
        label_names=videos['classes'],
        data_prefix=dict(video=videos['folder']))
    with pytest.raises(AnnotationError) as err:
        _build(loader)
    text = str(err.value)
    assert f'{listing}, line 3' in text and 'clip_2.mp4' in text
    assert 'label 3' in text and 'names only 3 classes' in text
    assert videos['classes'] in text


def test_zeroshot_list_line_without_label(videos, tmp_path):
    listing = write_lines(tmp_path / 'hmdb_list.txt',
                          ['clip_0.mp4 0', 'clip_1.mp4'])
    _, loader = action_test_set(
        'icar_swint_hmdb51_zeroshot.py', ann_file=listing,
        label_names=videos['classes'],
        data_prefix=dict(video=videos['folder']))
    with pytest.raises(AnnotationError, match=re.escape(listing) +
                       ', line 2: .*has no label'):
        _build(loader)


def _k400_loader(listing, videos):
    """The K400 test set of the public config, as a ValidatedVideoDataset
    (the configs/action switch recommended in issue 15's note)."""
    cfg, loader = action_test_set('icar_swint_k400_zeroshot.py',
                                  ann_file=listing,
                                  data_prefix=dict(video=videos['folder']))
    if loader.dataset.type == 'VideoDataset':
        loader.dataset.update(type='ValidatedVideoDataset', num_classes=400)
    return cfg, loader


def test_kinetics_label_outside_the_400_classes(videos, tmp_path):
    listing = write_lines(tmp_path / 'kinetics400_val_list_videos.txt',
                          ['clip_0.mp4 5', 'clip_1.mp4 400'])
    _, loader = _k400_loader(listing, videos)
    with pytest.raises(AnnotationError) as err:
        _build(loader)
    assert f'{listing}, line 2' in str(err.value)
    assert 'label 400' in str(err.value) and 'num_classes=400' in str(
        err.value)


def test_kinetics_labels_checked_against_a_test_vocabulary(videos, tmp_path):
    """tools/test.py --vocabulary on a Kinetics list: its labels still index
    the config's 400 classes (checked, the line named) and are matched to
    the vocabulary by name; videos of other classes are left out."""
    from icar_dense.engine.testing import use_vocabulary
    from icar_dense.models.text import load_vocabulary
    listing = write_lines(tmp_path / 'k400_list.txt',
                          ['clip_0.mp4 0', 'clip_1.mp4 2', 'clip_2.mp4 400'])
    cfg, loader = _k400_loader(listing, videos)
    k400 = list(load_vocabulary(
        cfg.model.cls_head.text_classifier.vocabulary).names)
    use_vocabulary(cfg, f'{k400[2]},teapot,{k400[0]}')
    with pytest.raises(AnnotationError) as err:
        _build(cfg.test_dataloader)
    assert f'{listing}, line 3' in str(err.value)
    assert 'num_classes=400' in str(err.value)

    listing = write_lines(tmp_path / 'k400_list.txt',
                          ['clip_0.mp4 0', 'clip_1.mp4 2', 'clip_2.mp4 7'])
    cfg, loader = _k400_loader(listing, videos)
    use_vocabulary(cfg, f'{k400[2]},teapot,{k400[0]}')
    dataset = _build(cfg.test_dataloader)
    assert len(dataset) == 2  # label 7's class is not in the vocabulary
    assert dataset.metainfo['no_ground_truth'] == ('teapot', )
    assert dataset.label_map[[0, 2, 7]].tolist() == [2, 0, -1]


def _safe_pipeline(pipeline, **options):
    """The pipeline with its decoding transforms inside SafeLoad, as the
    README prescribes (already so when the config has it)."""
    steps = [dict(t) for t in pipeline]
    if any(t['type'] == 'SafeLoad' for t in steps):
        for t in steps:
            if t['type'] == 'SafeLoad':
                t.update(options)
        return steps
    kinds = [t['type'] for t in steps]
    end = kinds.index('DecordDecode') + 1
    return [dict(type='SafeLoad', transforms=steps[:end], **options)
            ] + steps[end:]


def _video_sample(videos, tmp_path, name):
    listing = write_lines(tmp_path / 'list.txt', [f'{name} 1'])
    _, loader = action_test_set(
        'icar_swint_ucf101_zeroshot.py', ann_file=listing,
        label_names=videos['classes'],
        data_prefix=dict(video=videos['folder']))
    loader.dataset.pipeline = _safe_pipeline(loader.dataset.pipeline)
    dataset = _build(loader)
    with pytest.raises(DataLoadError) as err:
        dataset[0]
    return osp.join(videos['folder'], name), err.value


def test_zero_byte_video_names_the_file(videos, tmp_path):
    path, err = _video_sample(videos, tmp_path, 'empty.mp4')
    assert err.path == path and path in str(err)
    assert 'the file is empty (0 bytes)' in str(err)


def test_non_video_file_names_the_file(videos, tmp_path):
    path, err = _video_sample(videos, tmp_path, 'notes.mp4')
    assert err.path == path and path in str(err)
    assert 'DecordInit' in str(err)


def test_missing_video_names_the_file(videos, tmp_path):
    path, err = _video_sample(videos, tmp_path, 'gone.mp4')
    assert path in str(err) and 'does not exist' in str(err)


def test_zero_byte_training_video_skipped_when_asked(videos, tmp_path):
    """SafeLoad(skip_corrupt=True) in a training pipeline: the sample is
    skipped, logged with the file."""
    cfg = Config.fromfile(osp.join(REPO, 'configs/action',
                                   'icar_swint_k400_finetune.py'))
    listing = write_lines(tmp_path / 'train_list.txt',
                          ['empty.mp4 1', 'clip_0.mp4 2'])
    loader = cfg.train_dataloader
    loader.dataset.update(ann_file=listing,
                          data_prefix=dict(video=videos['folder']))
    loader.dataset.pipeline = _safe_pipeline(loader.dataset.pipeline,
                                             skip_corrupt=True)
    loader.update(num_workers=0, persistent_workers=False)
    dataset = _build(loader)
    with Records() as log:
        sample = dataset[0]
    assert int(sample['data_samples'].gt_label) == 2  # clip_0.mp4's label
    empty = osp.join(videos['folder'], 'empty.mp4')
    assert any(m.startswith(f'SafeLoad: skipped {empty}: ') and
               '0 bytes' in m for m in log.messages), log.messages


# ----------------------------------------------------------------------------
# vocabulary files
# ----------------------------------------------------------------------------
def _vocabulary_tool(path, tmp_path):
    """tools/test.py ... --vocabulary PATH: the file is read first."""
    return run_script('test.py', DEMO_LVIS,
                      str(tmp_path / 'no_checkpoint.pth'), '--vocabulary',
                      str(path), '--work-dir', str(tmp_path / 'work'))


def test_utf8_bom_is_stripped(tmp_path):
    from icar_dense.engine.testing import read_vocabulary_argument
    txt = tmp_path / 'classes.txt'
    txt.write_bytes('\ufeffcat\ndog: a canine\n'.encode('utf-8'))
    js = tmp_path / 'classes.json'
    js.write_bytes('\ufeff["cat", "dog"]'.encode('utf-8'))
    for path in (txt, js):
        assert read_vocabulary_argument(str(path))[2] == ['cat', 'dog']


def test_non_utf8_vocabulary_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_bytes('cat\ndog\ncr\u00e8me br\u00fbl\u00e9e\n'.encode(
        'latin-1'))
    err = _vocabulary_tool(path, tmp_path)
    assert isinstance(err, ValueError), repr(err)
    text = str(err)
    assert f'{path}, line 3: not UTF-8' in text and 'iconv' in text
    no_results(tmp_path / 'work')


def test_utf16_vocabulary_refused(tmp_path):
    path = tmp_path / 'classes.json'
    path.write_bytes('["cat", "dog"]'.encode('utf-16'))
    err = _vocabulary_tool(path, tmp_path)
    assert isinstance(err, ValueError) and str(path) in str(err)
    assert 'UTF-16' in str(err) and 'must be UTF-8' in str(err)


@pytest.mark.parametrize('content,needle', [
    ({'names': ['cat', 'dog'], 'version': '1.0'},
     "key(s) 'names', 'version' is not a vocabulary"),
    ({'classes': ['cat', 'dog']}, "the list under 'classes'"),
    ({'0': 'cat', '1': 'dog'}, 'the keys are all integers'),
    ({'cat': 0, 'dog': 1}, 'name -> label id table'),
])
def test_json_shapes_outside_the_grammar(tmp_path, content, needle):
    path = write_json(tmp_path / 'classes.json', content)
    err = _vocabulary_tool(path, tmp_path)
    assert isinstance(err, ValueError), repr(err)
    assert path in str(err) and needle in str(err)
    no_results(tmp_path / 'work')


def test_names_differing_only_by_case(seg, tmp_path):
    """The text tower lower-cases: 'Cat' and 'cat' would get one
    embedding.  Refused when tools/test.py builds the model."""
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_zeroshot.py',
                         str(tmp_path / 'unused'), work, tmp_path)
    err = run_script('test.py', config, seg['icar'], '--vocabulary',
                     'Cat,dog,cat', '--work-dir', str(work))
    assert isinstance(err, ValueError), repr(err)
    text = str(err)
    assert "classes 'Cat' (label 0) and 'cat' (label 2)" in text
    assert 'only in upper/lower case' in text
    no_results(work)


LONG = ('a wall of a building under the sky with a floor and a tree and a '
        'wall of a building under the sky')


def test_names_differing_after_max_length_tokens(seg, tmp_path):
    """RoBERTa keeps 16 tokens: names that differ later are one class."""
    vocab = write_lines(tmp_path / 'vocab.txt',
                        ['wall', f'{LONG} and a floor', f'{LONG} and a tree'])
    work = tmp_path / 'work'
    config = _seg_config(seg, 'icar_swint_upernet_ade20k_zeroshot.py',
                         str(tmp_path / 'unused'), work, tmp_path)
    err = run_script('test.py', config, seg['icar'], '--vocabulary', vocab,
                     '--work-dir', str(work))
    assert isinstance(err, ValueError), repr(err)
    text = str(err)
    assert '(label 1) and' in text and '(label 2)' in text
    assert 'after the first 16 tokens' in text and 'max_length=16' in text
    assert vocab in text
    no_results(work)


def test_truncation_reported_once_with_the_classes(seg, tmp_path):
    """Two classifiers on the same prompts (e.g. decode and auxiliary
    heads, cascade stages): one warning naming the cut classes."""
    from helpers_seg import shrink
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/seg/icar_swint_upernet_ade20k_zeroshot.py'))
    object.__setattr__(cfg, '_format_python_code', False)
    classes = ['wall', f'{LONG} and a tree', 'sky']
    cfg = shrink(cfg, str(tmp_path), str(tmp_path / 'w'), seg['icar'],
                 seg['tok'], classes=classes)
    # 'a photo of {}.': the short names fit in 16 tokens of the tiny BPE
    cfg.model.decode_head.text_classifier.templates = 'single'
    with DefaultScope.overwrite_default_scope('mmseg'), Records() as log:
        MODELS.build(cfg.model)
        MODELS.build(cfg.model)
    cut = [m for m in log.messages if 'are cut' in m]
    assert len(cut) == 1, log.messages
    assert '1 of 3 classes' in cut[0] and repr(classes[1]) in cut[0]
    assert 'max_length=16' in cut[0] and "'wall'" not in cut[0]


def test_bad_files_through_a_command(tmp_path):
    """As a user runs it: exit code 1 and the message on stderr."""
    path = write_json(tmp_path / 'classes.json',
                      {'names': ['cat'], 'version': '1.0'})
    proc = run_tool(['python', 'tools/test.py',
                     'configs/det/demo_lvis_tiny.py',
                     str(tmp_path / 'ckpt.pth'), '--vocabulary', path,
                     '--work-dir', str(tmp_path / 'work')], timeout=300)
    assert proc.returncode == 1
    assert path in proc.stderr and "'names', 'version'" in proc.stderr
    no_results(tmp_path / 'work')


def test_validation_shares_the_parsed_file(det):
    """The checks read the json once: the dataset's COCO api is built from
    the checked dict (no second parse)."""
    import mmdet.datasets.api_wrappers as wrappers
    calls = []
    original = wrappers.COCO.__init__

    def counting(self, annotation_file=None):
        calls.append(annotation_file)
        original(self, annotation_file)

    wrappers.COCO.__init__ = counting
    try:
        det_test_set(COCO_CFG, det['coco_root'], det['coco'])
    finally:
        wrappers.COCO.__init__ = original
    assert calls == [None]
