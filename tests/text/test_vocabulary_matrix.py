"""``tools/test.py CONFIG CKPT --vocabulary ...`` on every public
open-vocabulary / zero-shot config of the three tasks, with every vocabulary
form (comma list, .txt, .json, embeddings file of
tools/build_vocab_embeddings.py), on tiny data.

Each config runs once for real (in-process, through ``use_vocabulary`` --
the function tools/test.py calls -- and mmengine's Runner), the forms
rotating over the configs so that every form runs on every task; COCO-OV
(the config that used to crash) also runs through the real ``tools/test.py``
in a subprocess.  The vocabularies reorder the dataset classes, leave some
out and add one the dataset does not have (``teapot``): the evaluation must
match classes by name and name the class without ground truth.

Also here: the class order of the example configs is checked against the
vocabulary file (one source of truth), through tools/train.py.
"""
import glob
import json
import os
import os.path as osp

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402

from conftest import REPO, check_ok, run_tool, write_lines  # noqa: E402
from test_det_ov import det_data  # noqa: E402,F401  (module fixture)
from test_action_pipeline import action_data  # noqa: E402,F401

import icar_dense  # noqa: E402,F401
from icar_dense.engine.testing import use_vocabulary  # noqa: E402

pytestmark = pytest.mark.usefixtures('fast_cpu')

FORMS = ('list', 'txt', 'json', 'embeddings')
NEW = 'teapot'  # a class no dataset here has


def _configs(task, *patterns):
    found = set()
    for pattern in patterns:
        found.update(glob.glob(osp.join(REPO, 'configs', task, pattern)))
    return sorted(osp.relpath(p, REPO) for p in found)


DET = _configs('det', '*_ov.py', '*_ov_*.py')
SEG = _configs('seg', '*zeroshot*.py', '*ov_split*.py')
ACTION = _configs('action', '*zeroshot*.py')


def _load(name):
    cfg = Config.fromfile(osp.join(REPO, name))
    object.__setattr__(cfg, '_format_python_code', False)
    return cfg


def _form(task_index):
    return FORMS[task_index % len(FORMS)]


def _write_vocabulary(form, names, folder, cfg):
    """The --vocabulary argument of ``form`` for class ``names``."""
    os.makedirs(folder, exist_ok=True)
    if form == 'list':
        return ','.join(names)
    if form == 'txt':
        return write_lines(osp.join(folder, 'vocab.txt'),
                           [f'{n}: a {n} in a picture' for n in names])
    if form == 'json':
        path = osp.join(folder, 'vocab.json')
        with open(path, 'w') as f:
            json.dump({n: f'a {n} in a picture' for n in names}, f)
        return path
    # embeddings: what tools/build_vocab_embeddings.py writes
    from icar_dense.models.text import TextClassifier
    init_default_scope(cfg.default_scope)
    tc = _first_text_classifier(cfg.model)
    kwargs = {k: v for k, v in tc.items() if k not in ('type', 'init_cfg')}
    kwargs['vocabulary'] = list(names)
    path = osp.join(folder, 'vocab_embeddings.pth')
    TextClassifier(**kwargs).save_embeddings(path)
    return path


def _first_text_classifier(node):
    if isinstance(node, dict):
        if node.get('type') == 'TextClassifier':
            return node
        values = node.values()
    elif isinstance(node, (list, tuple)):
        values = node
    else:
        return None
    for value in values:
        found = _first_text_classifier(value)
        if found is not None:
            return found
    return None


def _log_text(work_dir):
    text = ''
    for path in glob.glob(osp.join(work_dir, '**', '*.log'), recursive=True):
        with open(path) as f:
            text += f.read()
    return text


def _run(cfg, value, work_dir):
    use_vocabulary(cfg, value)
    cfg.work_dir = work_dir
    runner = RUNNERS.build(cfg)
    metrics = runner.test()
    return runner, metrics, _log_text(work_dir)


# ----------------------------------------------------------------------------
# detection
# ----------------------------------------------------------------------------
def _det_cfg(name, data, work_dir):
    from test_det_configs import shrink
    cfg = _load(name)
    if 'example_custom' in name:
        # the example on the tiny COCO file: four of its categories
        classes = ('person', 'car', 'cat', 'dog')
        split = dict(metainfo=dict(classes=classes),
                     base_classes=('person', 'car'),
                     novel_classes=('cat', 'dog'))
        for loader in (cfg.train_dataloader, cfg.val_dataloader,
                       cfg.test_dataloader):
            loader.dataset.update(split)
        head = cfg.model.roi_head.bbox_head
        head.update(num_classes=4, train_classes=('person', 'car'))
        head.text_classifier.vocabulary = list(classes)
        cfg.model.roi_head.mask_head.num_classes = 4
    return shrink(cfg, data, work_dir)


def _det_vocabulary(name):
    if 'lvis' in name:  # tiny LVIS: airplane cow cat dog elephant bus_(...)
        return ['dog', 'cat', 'bus (vehicle)', NEW]
    return ['dog', 'cat', 'person', NEW]


@pytest.mark.parametrize('index', range(len(DET)), ids=DET)
def test_det_config_with_vocabulary(index, det_data, tmp_path):
    name = DET[index]
    form = _form(index)
    cfg = _det_cfg(name, det_data, str(tmp_path / 'work'))
    names = _det_vocabulary(name)
    value = _write_vocabulary(form, names, str(tmp_path / 'vocab'), cfg)
    runner, metrics, log = _run(cfg, value, str(tmp_path / 'work'))
    dataset = runner.test_dataloader.dataset
    assert list(dataset.metainfo['classes']) == names
    assert dataset.no_ground_truth == [NEW]
    head = runner.model.roi_head.bbox_head
    assert head.text_classifier.class_names == names
    key = 'lvis/bbox_AP' if 'lvis' in name else 'coco/bbox_AP50_all'
    assert key in metrics, sorted(metrics)
    assert 'no ground truth' in log and NEW in log
    # the ground truth of the evaluated classes is labelled in the
    # vocabulary's order, by name
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        for label in sample.gt_instances.labels.tolist():
            assert names[label] in ('dog', 'cat', 'person', 'bus (vehicle)')


def test_det_reordered_vocabulary_gives_the_same_metrics(det_data, tmp_path):
    """The COCO-OV classes in reverse order: the same AP as the config's own
    vocabulary (labels are matched by name, never by position)."""
    name = 'configs/det/icar_swint_coco_ov.py'
    own = _det_cfg(name, det_data, str(tmp_path / 'own'))
    own.randomness = dict(seed=0)
    reference = RUNNERS.build(own).test()
    classes = list(own.model.roi_head.bbox_head.text_classifier.vocabulary)
    cfg = _det_cfg(name, det_data, str(tmp_path / 'rev'))
    _, metrics, log = _run(cfg, ','.join(reversed(classes)),
                           str(tmp_path / 'rev'))
    for key in ('coco/bbox_AP50_all', 'coco/bbox_AP50_novel',
                'coco/bbox_AP50_base', 'coco/bbox_mAP', 'coco/segm_mAP'):
        assert metrics[key] == pytest.approx(reference[key], abs=2e-3), key
    assert 'no ground truth' not in log


def test_det_test_tool_with_vocabulary(det_data, tmp_path):
    """The README's use, as typed: tools/test.py CONFIG CKPT --vocabulary."""
    name = 'configs/det/icar_swinb_coco_ov.py'
    cfg = _det_cfg(name, det_data, str(tmp_path / 'work'))
    config = str(tmp_path / 'coco_ov_tiny.py')
    cfg.dump(config)
    ckpt = str(tmp_path / 'model.pth')
    import torch
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), ckpt)
    proc = check_ok(run_tool([
        'python', 'tools/test.py', config, ckpt, '--work-dir',
        str(tmp_path / 'test'), '--vocabulary', f'dog,cat,person,{NEW}'
    ]))
    log = proc.stdout + proc.stderr
    assert 'no ground truth' in log and NEW in log
    with open(osp.join(str(tmp_path / 'test'), 'metrics_test.json')) as f:
        metrics = json.load(f)['metrics']
    assert 'coco/bbox_AP50_all' in metrics


# ----------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def seg_env(tmp_path_factory, tiny_ade_root):
    from helpers_seg import make_icar_checkpoint, make_tokenizer
    root = tmp_path_factory.mktemp('seg_vocab')
    tok = make_tokenizer(str(root / 'tokenizer'))
    icar = make_icar_checkpoint(root / 'icar_official.pth', tok)
    return dict(root=root, tok=tok, icar=icar, data=tiny_ade_root)


def _seg_cfg(name, env, work_dir):
    from helpers_seg import shrink
    cfg = shrink(_load(name), env['data'], work_dir, env['icar']['path'],
                 env['tok'])
    cfg.log_level = 'INFO'
    return cfg


@pytest.mark.parametrize('index', range(len(SEG)), ids=SEG)
def test_seg_config_with_vocabulary(index, seg_env, tmp_path):
    name = SEG[index]
    form = _form(index + 1)
    cfg = _seg_cfg(name, seg_env, str(tmp_path / 'work'))
    cfg.load_from = seg_env['icar']['path']
    names = ['tree', 'sky', 'wall', NEW]  # tiny ADE: wall building sky ...
    value = _write_vocabulary(form, names, str(tmp_path / 'vocab'), cfg)
    runner, metrics, log = _run(cfg, value, str(tmp_path / 'work'))
    assert 0 <= metrics['mIoU'] <= 100
    assert 'no ground truth' in log and NEW in log
    assert 'not in the vocabulary' in log and 'building' in log
    # the per-class table: the evaluated classes only
    rows = [line.split('|')[1].strip() for line in log.splitlines()
            if line.startswith('|') and line.count('|') > 3]
    assert NEW not in rows and 'tree' in rows and 'building' not in rows


def test_seg_reordered_vocabulary_gives_the_same_miou(seg_env, tmp_path):
    name = 'configs/seg/icar_swint_upernet_ade20k_zeroshot.py'
    own = _seg_cfg(name, seg_env, str(tmp_path / 'own'))
    own.load_from = seg_env['icar']['path']
    reference = RUNNERS.build(own).test()
    classes = list(own.model.decode_head.text_classifier.vocabulary)
    cfg = _seg_cfg(name, seg_env, str(tmp_path / 'rev'))
    cfg.load_from = seg_env['icar']['path']
    _, metrics, _ = _run(cfg, ','.join(reversed(classes)),
                         str(tmp_path / 'rev'))
    for key in ('mIoU', 'aAcc', 'mAcc'):
        assert metrics[key] == pytest.approx(reference[key], abs=0.02), key


# ----------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------
def _action_cfg(name, data, work_dir):
    from test_action_pipeline import _shrink, _zeroshot_splits
    cfg = _shrink(_load(name), data, work_dir)
    base = osp.basename(name)
    if 'example_custom' in base:
        cfg.test_dataloader.dataset.update(
            ann_file=data['ucf_splits'][0], label_names=data['ucf_names'])
        cfg.model.cls_head.update(num_classes=4)
        cfg.model.cls_head.text_classifier.vocabulary = data['ucf_names']
    elif 'k400' in base:
        pass  # the tiny Kinetics-400 list
    elif cfg.test_cfg.get('type') == 'MultiSplitTestLoop' and \
            cfg.test_cfg.get('splits') and len(cfg.test_cfg.splits) > 1:
        kind = ('k600novel' if 'k600' in base else
                'ucf101' if 'ucf' in base else 'hmdb51')
        _zeroshot_splits(cfg, data, kind)
    else:  # one split (the authors' protocols)
        dataset = cfg.test_dataloader.dataset
        if 'k600' in base:
            dataset.update(ann_file=data['k600_list'],
                           label_names=data['k600_names'])
        else:
            key = 'ucf' if 'ucf' in base else 'hmdb'
            dataset.update(label_names=data[f'{key}_names'])
            if cfg.test_cfg.get('splits'):
                cfg.test_cfg.splits = [
                    dict(name='split1', ann_file=data[f'{key}_splits'][0])]
            else:
                dataset.ann_file = data[f'{key}_splits'][0]
    return cfg


def _action_vocabulary(name):
    from test_action_pipeline import (HMDB_NAMES, K400_LABELS, K600_NAMES,
                                      UCF_NAMES, _k400_names)
    base = osp.basename(name)
    if 'k400' in base:
        k400 = _k400_names()
        return [k400[K400_LABELS[5]], k400[K400_LABELS[4]], NEW]
    if 'k600' in base:
        return [K600_NAMES[1], K600_NAMES[4], K600_NAMES[2], NEW]
    names = HMDB_NAMES if 'hmdb' in base else UCF_NAMES
    names = [n.split(':')[0] for n in names]
    return [names[2], names[0], NEW]


@pytest.mark.parametrize('index', range(len(ACTION)), ids=ACTION)
def test_action_config_with_vocabulary(index, action_data, tmp_path):
    name = ACTION[index]
    form = _form(index + 2)
    cfg = _action_cfg(name, action_data, str(tmp_path / 'work'))
    names = _action_vocabulary(name)
    value = _write_vocabulary(form, names, str(tmp_path / 'vocab'), cfg)
    runner, metrics, log = _run(cfg, value, str(tmp_path / 'work'))
    assert any(k.endswith('acc/top1') or k.startswith('acc/top1')
               for k in metrics), sorted(metrics)
    assert runner.model.cls_head.text_classifier.class_names == names
    assert 'no ground truth' in log and NEW in log
    dataset = runner.test_dataloader.dataset
    for i in range(len(dataset)):  # only videos of the vocabulary's classes
        label = int(dataset.get_data_info(i)['label'])
        assert 0 <= label < len(names) and names[label] != NEW


# ----------------------------------------------------------------------------
# classification configs are not tools/test.py configs
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('name', _configs('cls', '*.py'))
def test_cls_config_vocabulary_points_at_zeroshot_cls(name):
    cfg = _load(name)
    with pytest.raises(ValueError, match='tools/zeroshot_cls.py'):
        use_vocabulary(cfg, 'cat,dog')


# ----------------------------------------------------------------------------
# item 2: the example configs' class order has one source of truth
# ----------------------------------------------------------------------------
def test_reordered_example_vocabulary_is_refused_by_train_tool(
        det_data, tmp_path):
    """configs/det/example_custom_ov.py with a vocabulary.txt in another
    order than its `classes`: tools/train.py stops before training, naming
    the file, the config's `classes` and the first label that differs."""
    cfg = _load('configs/det/example_custom_ov.py')
    tc = cfg.model.roi_head.bbox_head.text_classifier
    assert tc.vocabulary.classes == cfg.classes
    assert tc.vocabulary.source == cfg.data_root + 'vocabulary.txt'
    assert tc.vocabulary.classes_from == 'example_custom_ov.py: classes'
    swapped = list(cfg.classes)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    vocab = write_lines(str(tmp_path / 'vocabulary.txt'),
                        [f'{n}: a {n} on a table' for n in swapped])
    # ICAR_ROBERTA: the one setting of the tokenizer folder (the tiny one)
    tokenizer = det_data['text_encoder']['tokenizer']
    proc = run_tool([
        'python', 'tools/train.py', 'configs/det/example_custom_ov.py',
        '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        f'model.roi_head.bbox_head.text_classifier.vocabulary.source={vocab}'
    ], env=dict(ICAR_ROBERTA=tokenizer))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert vocab in out and 'example_custom_ov.py: classes' in out
    assert f"label 1 is {cfg.classes[1]!r}" in out, out[-3000:]
    assert f'Using env variable `ICAR_ROBERTA` with value of {tokenizer}' \
        in out
    assert 'RoBERTa tokenizer folder' not in out


@pytest.mark.parametrize('name', ['configs/det/example_custom_ov.py',
                                  'configs/seg/example_custom_ov.py'])
def test_example_vocabulary_checked_against_classes(name, tmp_path):
    from icar_dense.models.text import load_vocabulary
    cfg = _load(name)
    tc = _first_text_classifier(cfg.model)
    spec = dict(tc.vocabulary)
    good = write_lines(str(tmp_path / 'good.txt'),
                       [f'{n}: desc of {n}' for n in cfg.classes])
    vocab = load_vocabulary(dict(spec, source=good))
    assert vocab.names == list(cfg.classes)
    assert vocab.descriptions[0] == [f'desc of {cfg.classes[0]}']
    short = write_lines(str(tmp_path / 'short.txt'), cfg.classes[:-1])
    with pytest.raises(ValueError, match='only in .*classes'):
        load_vocabulary(dict(spec, source=short))
    reordered = write_lines(str(tmp_path / 'reordered.txt'),
                            list(reversed(cfg.classes)))
    with pytest.raises(ValueError, match='label 0 is'):
        load_vocabulary(dict(spec, source=reordered))


# ----------------------------------------------------------------------------
# one setting for the RoBERTa tokenizer, one error naming it
# ----------------------------------------------------------------------------
def test_every_config_reads_the_tokenizer_from_one_setting(monkeypatch):
    monkeypatch.setenv('ICAR_ROBERTA', '/elsewhere/roberta-base')
    names = sorted(
        osp.relpath(p, REPO)
        for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py')))
    seen = 0
    for name in names:
        cfg = _load(name)
        for node in _text_encoders(cfg._cfg_dict):
            if node.get('type') == 'RobertaTextEncoder':
                assert node['tokenizer'] == '/elsewhere/roberta-base', name
                assert node.get('model') is None, name
                seen += 1
    assert seen >= 30, seen


def _text_encoders(node):
    if isinstance(node, dict):
        if 'type' in node and 'tokenizer' in node:
            yield node
        for value in node.values():
            yield from _text_encoders(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _text_encoders(value)


def test_missing_tokenizer_error_names_the_path_and_the_fix(tmp_path):
    """tools/test.py on a public config without the tokenizer files."""
    ckpt = str(tmp_path / 'any.pth')
    open(ckpt, 'wb').close()
    proc = run_tool([
        'python', 'tools/test.py',
        'configs/seg/icar_swint_upernet_ade20k_zeroshot.py', ckpt,
        '--work-dir', str(tmp_path / 'work')
    ], env=dict(ICAR_ROBERTA=str(tmp_path / 'no_roberta')))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"RoBERTa tokenizer folder '{tmp_path / 'no_roberta'}' does " \
        'not exist' in out, out[-2000:]
    for fix in ('ICAR_ROBERTA=', 'model.decode_head',
                'text_classifier.text_encoder.tokenizer=',
                'docs/troubleshooting.md'):
        assert fix in out
    assert 'has only' not in out
