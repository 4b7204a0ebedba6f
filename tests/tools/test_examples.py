"""The "new task by inheritance" examples of docs/new_task.md.

configs/det/example_custom_ov.py, configs/seg/example_custom_ov.py and
configs/action/example_custom_zeroshot.py inherit the public configs and
change only the dataset, the vocabulary file and the schedule.  Here each
is (1) compared with its public parent -- every difference must be one of
those three -- and (2) run on tiny data laid out exactly as the config
expects (COCO-format json + images, ADE-format images + label maps, a video
list), with the shrink overrides of the task tests (tiny Swin, tiny RoBERTa
with a real byte-level BPE tokenizer, small images, 2 iterations): trained
for 2 iterations and tested (det, seg) or tested zero-shot (action).  The
vocabulary files carry descriptions ("name: description"), which must reach
the text classifier's prompts.  The snippets of docs/new_task.md (vocabulary
.txt / .json, a trainable text encoder with its own learning rate) are read
from the doc and run.

The helpers here are shared with tests/tools/test_show_dir.py.
"""
import copy
import json
import os
import os.path as osp
import re
import uuid

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import icar_dense  # noqa: E402,F401
from conftest import REPO, write_lines  # noqa: E402
from data_factory import make_ade20k, make_coco  # noqa: E402
from test_action_pipeline import _shrink as shrink_action  # noqa: E402
from test_action_pipeline import action_data  # noqa: E402,F401 (fixture)
from test_det_configs import shrink as shrink_det  # noqa: E402
from test_det_ov import det_data  # noqa: E402,F401 (fixture)
from helpers_seg import (make_icar_checkpoint,  # noqa: E402
                         make_tokenizer)
from helpers_seg import shrink as shrink_seg  # noqa: E402

DET_EXAMPLE = 'configs/det/example_custom_ov.py'
SEG_EXAMPLE = 'configs/seg/example_custom_ov.py'
ACTION_EXAMPLE = 'configs/action/example_custom_zeroshot.py'
PARENTS = {
    DET_EXAMPLE: 'configs/det/icar_swint_coco_ov.py',
    SEG_EXAMPLE: 'configs/seg/icar_swint_upernet_ade20k_160k.py',
    ACTION_EXAMPLE: 'configs/action/icar_swint_k400_zeroshot.py',
}
NEW_TASK_DOC = osp.join(REPO, 'docs', 'new_task.md')

DET_DESCRIPTIONS = {
    'cup': 'a small open container usually used for drinking',
    'bowl': 'a round vessel that is open at the top, used for food',
    'teapot': 'a pot for brewing tea, with a spout and a handle',
    'knife': 'an edge tool with a sharp blade and a handle',
    'spoon': 'a utensil with a shallow bowl and a long handle',
    'kettle': 'a metal pot with a spout, for boiling water',
    'bottle': 'a vessel with a narrow neck and no handle',
}
SEG_DESCRIPTIONS = {
    'road': 'an open way for vehicles',
    'sidewalk': 'a paved walk at the side of a street',
    'building': 'a structure with a roof and walls',
    'vegetation': 'trees, bushes and grass',
    'sky': 'the atmosphere above the earth',
}
ACTION_VOCABULARY = [
    'juggling balls: throwing and catching several balls',
    'riding a bike: travelling on a bicycle',
    'diving: jumping into water head first',
    'cartwheel',
    'climbing a rope: going up a rope with hands and feet',
]


# ---------------------------------------------------------------------------
# helpers (also used by test_show_dir.py)
# ---------------------------------------------------------------------------
def load_config(name):
    return Config.fromfile(osp.join(REPO, name))


def unique(prefix):
    return f'{prefix}_{uuid.uuid4().hex[:8]}'


def flatten(node, prefix=''):
    """{dotted.path: leaf}; lists of dicts are indexed, other lists leaves."""
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f'{prefix}{key}.'))
    elif isinstance(node, (list, tuple)) and any(
            isinstance(v, dict) for v in node):
        for i, value in enumerate(node):
            out.update(flatten(value, f'{prefix}{i}.'))
    else:
        out[prefix[:-1]] = list(node) if isinstance(node, tuple) else node
    return out


def config_differences(child, parent):
    a, b = flatten(child.to_dict()), flatten(parent.to_dict())
    return sorted(k for k in set(a) | set(b) if a.get(k, '<unset>') != b.get(
        k, '<unset>'))


def make_kitchen(root, classes):
    """The det example's layout: COCO jsons + images + vocabulary.txt."""
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(classes)]
    for split in ('train', 'val'):
        make_coco(root, categories, num_images=4, size=(64, 64), split=split,
                  objects_per_image=2)
    write_lines(osp.join(root, 'vocabulary.txt'),
                [f'{n}: {DET_DESCRIPTIONS[n]}' for n in classes])
    return root


def det_example(det_data, root, work_dir):  # noqa: F811
    """The det example, shrunk, on the kitchen data under ``root``."""
    cfg = load_config(DET_EXAMPLE)
    if not osp.exists(osp.join(root, 'vocabulary.txt')):
        make_kitchen(root, cfg.classes)
    head = cfg.model.roi_head.bbox_head
    # the vocabulary file, checked against `classes` (one label order)
    spec = head.text_classifier.vocabulary
    assert spec.source == cfg.data_root + 'vocabulary.txt'
    assert spec.classes == cfg.classes
    spec.source = osp.join(root, 'vocabulary.txt')
    cfg = shrink_det(cfg, dict(det_data, coco_root=root), str(work_dir))
    cfg.experiment_name = unique('det_example')
    cfg.visualizer.name = unique('det_vis')
    return cfg


def make_streets(root, classes):
    """The seg example's layout: ADE-format images / maps + vocabulary."""
    make_ade20k(root, num_classes=len(classes))
    write_lines(osp.join(root, 'vocabulary.txt'),
                [f'{n}: {SEG_DESCRIPTIONS[n]}' for n in classes])
    return root


@pytest.fixture(scope='module')
def seg_env(tmp_path_factory):
    root = tmp_path_factory.mktemp('seg_example')
    tok = make_tokenizer(str(root / 'tokenizer'))
    icar = make_icar_checkpoint(root / 'icar_official.pth', tok)
    classes = load_config(SEG_EXAMPLE).classes
    data = make_streets(str(root / 'streets'), classes)
    return dict(root=root, tok=tok, icar=icar, data=data, classes=classes)


def seg_example(env, work_dir, cfg=None):
    """The seg example (or a child of it), shrunk, on the street data."""
    cfg = load_config(SEG_EXAMPLE) if cfg is None else cfg
    object.__setattr__(cfg, '_format_python_code', False)
    tc = cfg.model.decode_head.text_classifier
    # the vocabulary file, checked against `classes` (one label order)
    spec = tc.vocabulary
    assert spec.source == cfg.data_root + 'vocabulary.txt'
    assert spec.classes == cfg.classes
    cfg = shrink_seg(cfg, env['data'], work_dir, env['icar']['path'],
                     env['tok'], classes=env['classes'])
    # shrink writes the class names as a list; the example reads its file
    spec.source = osp.join(env['data'], 'vocabulary.txt')
    cfg.model.decode_head.text_classifier.vocabulary = spec
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = env['data']
    cfg.experiment_name = unique('seg_example')
    return cfg


def action_example(data, work_dir):
    """The zero-shot action example, shrunk, on the tiny videos."""
    cfg = load_config(ACTION_EXAMPLE)
    cfg = shrink_action(cfg, data, str(work_dir))
    root = str(work_dir)
    os.makedirs(root, exist_ok=True)
    vocabulary = write_lines(osp.join(root, 'vocabulary.txt'),
                             ACTION_VOCABULARY)
    listing = write_lines(
        osp.join(root, 'test_list.txt'),
        [f'{v} {i % 5}' for i, v in enumerate(data['videos'][:5])])
    dataset = cfg.test_dataloader.dataset
    assert dataset.label_names == cfg.vocabulary
    assert cfg.model.cls_head.text_classifier.vocabulary == cfg.vocabulary
    dataset.update(ann_file=listing, label_names=vocabulary)
    cfg.model.cls_head.text_classifier.vocabulary = vocabulary
    cfg.visualizer.name = unique('action_vis')
    return cfg


def doc_blocks(path, language):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    return re.findall(rf'```{language}\n(.*?)```', text, flags=re.S)


# one torch thread and no config formatting: tests/conftest.py
pytestmark = pytest.mark.usefixtures('fast_cpu')


# ---------------------------------------------------------------------------
# the examples change only the dataset, the vocabulary and the schedule
# ---------------------------------------------------------------------------
DATA_KEYS = ('data_root', 'ann_file', 'data_prefix', 'metainfo',
             'base_classes', 'novel_classes', 'type', 'img_suffix',
             'seg_map_suffix', 'reduce_zero_label', 'label_names')
ALLOWED = {
    DET_EXAMPLE: (
        r'(train|val|test)_dataloader\.dataset\.(%s)(\..*)?' %
        '|'.join(DATA_KEYS),
        r'(val|test)_evaluator\.ann_file',
        r'model\.roi_head\.bbox_head\.(num_classes|train_classes)',
        r'model\.roi_head\.bbox_head\.text_classifier\.'
        r'(vocabulary|descriptions)(\..*)?',
        r'model\.roi_head\.mask_head\.num_classes',
        r'(train_cfg|param_scheduler|default_hooks\.checkpoint)\..*',
        r'(data_root|classes|base_classes|novel_classes|ov_split(\..*)?|'
        r'vocabulary|num_classes|max_epochs)',
    ),
    SEG_EXAMPLE: (
        r'(train|val|test)_dataloader\.dataset\.(%s)(\..*)?' %
        '|'.join(DATA_KEYS),
        r'model\.(decode_head|auxiliary_head)\.num_classes',
        r'model\.decode_head\.text_classifier\.vocabulary(\..*)?',
        # the public recipe trains the text tower (as the iCAR authors);
        # the open-vocabulary example keeps it frozen
        r'model\.decode_head\.text_classifier\.freeze_text_encoder',
        # CheckSegMap is bounded by the example's own class count (data)
        r'(train|val|test)_dataloader\.dataset\.pipeline\.\d+\.num_classes',
        r'(train|test)_pipeline\.\d+\.num_classes',
        r'tta_pipeline\.1\.transforms',
        r'(train_cfg|param_scheduler|default_hooks\.checkpoint)\..*',
        r'(data_root|classes|dataset(\..*)?|vocabulary|num_classes|'
        r'max_iters)',
    ),
    ACTION_EXAMPLE: (
        r'test_dataloader\.dataset\.(%s)(\..*)?' % '|'.join(DATA_KEYS),
        r'model\.cls_head\.num_classes',
        r'model\.cls_head\.text_classifier\.vocabulary',
        r'(data_root|ann_file|vocabulary|num_classes)',
    ),
}


@pytest.mark.parametrize('example', sorted(PARENTS))
def test_example_changes_only_data_vocabulary_schedule(example):
    child, parent = load_config(example), load_config(PARENTS[example])
    with open(osp.join(REPO, example)) as f:
        assert f"_base_ = ['./{osp.basename(PARENTS[example])}']" in f.read()
    changed = config_differences(child, parent)
    patterns = [re.compile(p) for p in ALLOWED[example]]
    other = [k for k in changed if not any(p.fullmatch(k) for p in patterns)]
    assert not other, f'{example} changes more than data/vocabulary/' \
        f'schedule: {other}'
    assert any('dataloader.dataset' in k for k in changed)
    assert any('text_classifier.vocabulary' in k for k in changed)
    # the model, its optimizer and the pipelines stay the public ones
    assert child.optim_wrapper == parent.optim_wrapper
    for key in ('backbone', 'data_preprocessor'):
        assert child.model[key] == parent.model[key]
    vocab_file = child.vocabulary
    assert vocab_file.startswith(child.data_root) and vocab_file.endswith(
        '.txt')


def test_det_example_schedule_and_split():
    cfg = load_config(DET_EXAMPLE)
    assert cfg.train_cfg.max_epochs == 24 and cfg.train_cfg.val_interval == 2
    assert cfg.param_scheduler[1].milestones == [16, 22]
    head = cfg.model.roi_head.bbox_head
    assert head.num_classes == len(cfg.classes) == 7
    assert list(head.train_classes) == list(cfg.base_classes)
    assert set(cfg.base_classes) | set(cfg.novel_classes) == set(cfg.classes)
    assert cfg.train_dataloader.dataset.type == 'OVCocoDataset'
    assert cfg.default_hooks.checkpoint.save_best == 'coco/bbox_AP50_novel'


def test_det_example_trains_and_tests(det_data, tmp_path):  # noqa: F811
    from mmengine.registry import RUNNERS
    cfg = det_example(det_data, str(tmp_path / 'kitchen'), tmp_path / 'work')
    runner = RUNNERS.build(cfg)
    runner.train()
    assert runner.iter == 2
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))
    head = runner.model.roi_head.bbox_head
    # the vocabulary file, descriptions included, is the classifier
    assert head.class_names == list(cfg.train_dataloader.dataset.metainfo[
        'classes'])
    vocab = head.text_classifier.vocabulary
    assert vocab.descriptions[2] == [DET_DESCRIPTIONS['teapot']]
    # the training set holds no novel annotation
    train_set = runner.train_dataloader.dataset
    novel = {train_set.metainfo['classes'].index(n)
             for n in train_set.metainfo['novel_classes']}
    labels = [inst['bbox_label'] for i in range(len(train_set))
              for inst in train_set.get_data_info(i)['instances']]
    assert labels and not novel & set(labels)
    test_cfg = copy.deepcopy(cfg)
    test_cfg.load_from = osp.join(cfg.work_dir, 'epoch_1.pth')
    test_cfg.work_dir = cfg.work_dir + '_test'
    test_cfg.experiment_name = unique('det_example_test')
    test_cfg.visualizer.name = unique('det_vis_test')
    metrics = RUNNERS.build(test_cfg).test()
    for key in ('coco/bbox_AP50_novel', 'coco/bbox_AP50_base',
                'coco/bbox_AP50_all', 'coco/segm_AP50_novel'):
        assert key in metrics and 0 <= metrics[key] <= 1, (key, metrics)


def test_seg_example_schedule():
    cfg = load_config(SEG_EXAMPLE)
    assert cfg.train_cfg.max_iters == 20000
    assert cfg.param_scheduler[-1].end == 20000
    assert cfg.default_hooks.checkpoint.interval == 2000
    assert cfg.train_dataloader.dataset.type == 'BaseSegDataset'
    assert cfg.model.decode_head.num_classes == len(cfg.classes) == 5


def test_seg_example_trains_and_tests(seg_env, tmp_path):
    from mmengine.registry import RUNNERS
    cfg = seg_example(seg_env, str(tmp_path / 'work'))
    runner = RUNNERS.build(cfg)
    runner.train()
    assert runner.iter == 2
    clf = runner.model.decode_head.text_classifier
    assert clf.class_names == list(seg_env['classes'])
    assert clf.vocabulary.descriptions[1] == [SEG_DESCRIPTIONS['sidewalk']]
    state = torch.load(
        osp.join(cfg.work_dir, 'iter_2.pth'), weights_only=True)['state_dict']
    # frozen text tower (the default): still the iCAR file's
    torch.testing.assert_close(
        state['decode_head.text_classifier.text_encoder.projector.weight'],
        seg_env['icar']['text']['projector.weight'], rtol=0, atol=0)
    test_cfg = copy.deepcopy(cfg)
    test_cfg.load_from = osp.join(cfg.work_dir, 'iter_2.pth')
    test_cfg.work_dir = cfg.work_dir + '_test'
    test_cfg.experiment_name = unique('seg_example_test')
    test_cfg.visualizer.name += '_test'
    metrics = RUNNERS.build(test_cfg).test()
    assert 0 <= metrics['mIoU'] <= 100 and 0 <= metrics['aAcc'] <= 100


def test_action_example_tests_zero_shot(action_data, tmp_path):  # noqa: F811
    from mmengine.registry import RUNNERS
    cfg = action_example(action_data, tmp_path / 'work')
    cfg.load_from = action_data['icar']  # the official iCAR image model
    runner = RUNNERS.build(cfg)
    metrics = runner.test()
    assert 0 <= metrics['acc/top1'] <= 1
    names = [line.split(':')[0] for line in ACTION_VOCABULARY]
    assert runner.model.class_names == names
    vocab = runner.model.cls_head.text_classifier.vocabulary
    assert vocab.descriptions[0] == ['throwing and catching several balls']
    assert vocab.descriptions[3] == []
    dataset = runner.test_dataloader.dataset
    assert [dataset.get_data_info(i)['label'] for i in range(len(dataset))
            ] == [0, 1, 2, 3, 4]
    with open(osp.join(cfg.work_dir, 'metrics_test.json')) as f:
        assert json.load(f)['metrics']['acc/top1'] == metrics['acc/top1']


def test_action_example_num_classes_must_match(action_data, tmp_path):  # noqa
    """A vocabulary of another size than num_classes is a clear error."""
    from mmengine.registry import RUNNERS
    cfg = action_example(action_data, tmp_path / 'work')
    cfg.model.cls_head.num_classes = 4
    cfg.load_from = action_data['icar']
    with pytest.raises(ValueError, match='num_classes=4'):
        RUNNERS.build(cfg).test()


# ---------------------------------------------------------------------------
# the snippets of docs/new_task.md
# ---------------------------------------------------------------------------
def test_new_task_doc_vocabulary_formats_agree(tmp_path):
    """The .txt and .json vocabulary examples of the doc are the same
    classes with the same descriptions."""
    from icar_dense.models.text import load_vocabulary
    text_blocks = [b for b in doc_blocks(NEW_TASK_DOC, 'text') if ':' in b]
    json_blocks = doc_blocks(NEW_TASK_DOC, 'json')
    assert text_blocks and json_blocks
    txt = tmp_path / 'vocabulary.txt'
    txt.write_text(text_blocks[0])
    js = tmp_path / 'vocabulary.json'
    js.write_text(json_blocks[0])
    a, b = load_vocabulary(str(txt)), load_vocabulary(str(js))
    assert a.names == b.names and len(a.names) >= 3
    assert a.descriptions == b.descriptions
    assert any(a.descriptions) and not all(a.descriptions)
    # the det example's classes, in its label order
    assert a.names == list(load_config(DET_EXAMPLE).classes)


def test_trainable_text_encoder_snippet(seg_env, tmp_path):
    """The doc's "train the text encoder" config: the RoBERTa tower gets
    gradients, its own learning rate (lr_mult) and moves."""
    from mmengine.registry import RUNNERS
    snippet = [b for b in doc_blocks(NEW_TASK_DOC, 'python')
               if 'freeze_text_encoder=False' in b]
    assert len(snippet) == 1, 'docs/new_task.md: one such python block'
    text = snippet[0]
    match = re.search(r"_base_ = \['(.*?)'\]", text)
    assert match, text
    base = osp.normpath(osp.join(REPO, 'configs/seg', match.group(1)))
    assert base == osp.join(REPO, SEG_EXAMPLE)
    child = tmp_path / 'trainable_text.py'
    child.write_text(text.replace(match.group(1), base))
    cfg = seg_example(seg_env, str(tmp_path / 'work'),
                      Config.fromfile(str(child)))
    mult = cfg.optim_wrapper.paramwise_cfg.custom_keys['text_encoder'].lr_mult
    assert 0 < mult < 1
    # constant lr so that 2 steps visibly move the weights
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0,
                                by_epoch=False)]
    cfg.optim_wrapper.optimizer.lr = 1e-3
    runner = RUNNERS.build(cfg)
    runner.train()
    model = runner.model
    encoder = model.decode_head.text_classifier.text_encoder
    assert all(p.requires_grad for p in encoder.parameters())
    lr = {id(p): g['lr'] for g in runner.optim_wrapper.optimizer.param_groups
          for p in g['params']}
    head_lr = lr[id(model.decode_head.text_classifier.visual_proj.weight)]
    assert lr[id(encoder.projector.weight)] == pytest.approx(mult * head_lr)
    moved = (encoder.projector.weight.detach() -
             seg_env['icar']['text']['projector.weight']).abs().max()
    assert moved > 0
