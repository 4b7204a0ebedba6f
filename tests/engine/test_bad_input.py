"""Bad input gives a clear error naming the file / key / class at fault.

Each test feeds one kind of bad input to the real code path (library
classes, mmengine builders, ``tools/*.py``) and checks the message.
"""
import json
import logging
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch

import icar_dense  # noqa: F401
from conftest import REPO
from helpers_faults import run_script
from icar_dense.datasets.transforms import (DataLoadError, SafeLoad,
                                            skipped_samples)
from icar_dense.engine.build_errors import suggest_types
from icar_dense.models.text import TextClassifier, load_vocabulary
from icar_dense.checkpoint import CheckpointError

TINY = osp.join(REPO, 'tests', 'configs', 'tiny_seg_fcn.py')


def message(err):
    if isinstance(err, SystemExit):
        return str(err.code)
    return str(err)


@pytest.fixture(scope='module')
def scope_mmseg():
    from mmengine.registry import DefaultScope
    name = 'test_bad_input_mmseg'
    scope = DefaultScope.get_instance(name, scope_name='mmseg')
    yield scope
    DefaultScope._instance_dict.pop(name, None)


# ----------------------------------------------------------------------------
# vocabularies and text classifier
# ----------------------------------------------------------------------------
def test_missing_vocabulary_file(tmp_path):
    path = str(tmp_path / 'classes.txt')
    with pytest.raises(FileNotFoundError, match=re.escape(path)):
        load_vocabulary(path)


def test_empty_vocabulary_file(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('# only a comment\n\n')
    with pytest.raises(ValueError, match=re.escape(str(path)) +
                       '.*no class names'):
        load_vocabulary(str(path))


def test_duplicate_class_names_in_file(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('cat\ndog\ncat: a small feline\n')
    with pytest.raises(ValueError) as err:
        load_vocabulary(str(path))
    assert str(path) in str(err.value)
    assert "'cat' at line 1, line 3" in str(err.value)


def test_duplicate_class_names_in_list():
    with pytest.raises(ValueError, match="Duplicate.*'dog'"):
        TextClassifier(embed_dim=8, vocabulary=['cat', 'dog', 'dog'],
                       text_encoder=dict(type='CLIPTextTransformer',
                                         context_length=8, width=8,
                                         layers=1, heads=1, embed_dim=8))


def test_vocabulary_json_syntax_error(tmp_path):
    path = tmp_path / 'classes.json'
    path.write_text('{"cat": "a feline",\n "dog": }')
    with pytest.raises(ValueError, match=re.escape(str(path)) + ', line 2'):
        load_vocabulary(str(path))


@pytest.mark.parametrize('tau', [0, -0.05])
def test_non_positive_tau(tau, tmp_path):
    with pytest.raises(ValueError, match=f'tau must be a number > 0, got '
                       f'{tau}'):
        TextClassifier(embed_dim=8, tau=tau, embeddings='unused.pth')


def _embeddings_file(path, names, dim):
    torch.save(dict(class_names=list(names),
                    embeddings=torch.randn(len(names), dim)), str(path))
    return str(path)


def test_embedding_dimension_not_matching_the_head(tmp_path):
    path = _embeddings_file(tmp_path / 'emb.pth', ['cat', 'dog'], 16)
    with pytest.raises(ValueError) as err:
        TextClassifier(in_channels=8, embed_dim=32, embeddings=path)
    assert path in str(err.value)
    assert '16-d' in str(err.value) and 'embed_dim is 32' in str(err.value)


def test_vocabulary_size_not_matching_num_classes(tmp_path, scope_mmseg):
    from mmseg.registry import MODELS
    path = _embeddings_file(tmp_path / 'emb.pth', ['cat', 'dog', 'sky'], 16)
    with pytest.raises(ValueError) as err:
        MODELS.build(dict(
            type='ICARFCNHead', in_channels=8, channels=8, num_convs=0,
            concat_input=False, num_classes=5,
            text_classifier=dict(type='TextClassifier', embed_dim=16,
                                 embeddings=path)))
    text = str(err.value)
    assert 'ICARFCNHead' in text and 'num_classes=5' in text
    assert '3 classes' in text and path in text


def test_missing_tokenizer_folder(tmp_path):
    folder = str(tmp_path / 'roberta-tokenizer')
    with pytest.raises(FileNotFoundError, match=re.escape(folder)):
        TextClassifier(
            embed_dim=8, vocabulary=['cat', 'dog'],
            text_encoder=dict(type='RobertaTextEncoder', tokenizer=folder,
                              config=dict(vocab_size=300, hidden_size=8,
                                          num_hidden_layers=1,
                                          num_attention_heads=1,
                                          intermediate_size=8),
                              embed_dim=8))


# ----------------------------------------------------------------------------
# detection datasets
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from data_factory import make_coco
    root = str(tmp_path_factory.mktemp('coco'))
    cats = [dict(id=1, name='person'), dict(id=17, name='cat'),
            dict(id=18, name='dog')]
    return root, make_coco(root, cats, num_images=2, size=(64, 64))


def test_split_names_a_class_not_in_the_dataset(coco_root):
    from icar_dense.datasets import OVCocoDataset
    root, ann_file = coco_root
    with pytest.raises(ValueError) as err:
        OVCocoDataset(ann_file=ann_file, data_root=root,
                      data_prefix=dict(img='train/'),
                      base_classes=['person', 'unicorn'],
                      novel_classes=['cat', 'dog'], pipeline=[])
    text = str(err.value)
    assert 'OVCocoDataset' in text and "'unicorn'" in text
    assert ann_file in text


def test_lvis_json_without_frequency(tmp_path):
    from data_factory import make_coco
    from icar_dense.datasets import OVLVISV1Dataset
    ann_file = make_coco(str(tmp_path), [dict(id=1, name='person'),
                                         dict(id=2, name='cat')],
                         num_images=1, size=(48, 48), lvis=True)
    with open(ann_file) as f:
        data = json.load(f)
    for cat in data['categories']:
        del cat['frequency']
    with open(ann_file, 'w') as f:
        json.dump(data, f)
    with pytest.raises(KeyError) as err:
        OVLVISV1Dataset(ann_file=ann_file, data_root=str(tmp_path),
                        data_prefix=dict(img=''), pipeline=[])
    text = str(err.value)
    assert ann_file in text and "'frequency'" in text


def test_empty_dataset_after_filtering(coco_root, tmp_path, scope_mmseg):
    """Every annotation is a novel class: nothing left to train on."""
    from mmdet.registry import DATASETS  # noqa: F401  (mmdet scope)
    from mmengine.registry import DefaultScope
    from icar_dense.engine import ICARRunner
    root, ann_file = coco_root
    with open(ann_file) as f:
        data = json.load(f)
    for ann in data['annotations']:
        ann['category_id'] = 17  # cat (novel)
    novel_only = str(tmp_path / 'novel_only.json')
    with open(novel_only, 'w') as f:
        json.dump(data, f)
    loader = dict(
        batch_size=1, num_workers=0,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(type='OVCocoDataset', ann_file=novel_only,
                     data_root=root, data_prefix=dict(img='train/'),
                     base_classes=['person', 'dog'], novel_classes=['cat'],
                     filter_cfg=dict(filter_empty_gt=True), pipeline=[]))
    # the configs' runner (runner_type='ICARRunner'); mmengine's Runner
    # fails in numpy instead ("need at least one array to concatenate")
    for serialize_data in (True, False):
        loader['dataset']['serialize_data'] = serialize_data
        with DefaultScope.overwrite_default_scope('mmdet'):
            with pytest.raises(ValueError) as err:
                ICARRunner.build_dataloader(loader)
        text = str(err.value)
        assert 'OVCocoDataset' in text and novel_only in text
        assert 'no samples' in text


# ----------------------------------------------------------------------------
# images and videos
# ----------------------------------------------------------------------------
def _corrupt_copy(src, dst, keep=0.5):
    with open(src, 'rb') as f:
        data = f.read()
    with open(dst, 'wb') as f:
        f.write(data[:int(len(data) * keep)])
    return str(dst)


@pytest.fixture
def images(tmp_path):
    good = str(tmp_path / 'good.jpg')
    cv2.imwrite(good, (np.random.RandomState(0).rand(32, 32, 3) *
                       255).astype(np.uint8))
    return good, _corrupt_copy(good, tmp_path / 'truncated.jpg')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_corrupt_image_names_the_file(images, scope):
    """SafeLoad is built from the pipeline's own registry."""
    import importlib

    from mmengine.registry import DefaultScope
    good, bad = images
    registry = importlib.import_module(f'{scope}.registry').TRANSFORMS
    with DefaultScope.overwrite_default_scope(scope):
        load = registry.build(dict(type='SafeLoad', transforms=[
            dict(type='LoadImageFromFile', imdecode_backend='pillow')]))
        assert load(dict(img_path=good))['img'].shape == (32, 32, 3)
        with pytest.raises(DataLoadError) as err:
            load(dict(img_path=bad))
    assert err.value.path == bad
    assert bad in str(err.value) and 'LoadImageFromFile' in str(err.value)


def test_corrupt_segmentation_map_names_the_map(images, tmp_path,
                                                scope_mmseg):
    good, _ = images
    seg = tmp_path / 'seg.png'
    seg.write_bytes(b'')
    load = SafeLoad(transforms=[dict(type='LoadImageFromFile'),
                                dict(type='LoadAnnotations')])
    with pytest.raises(DataLoadError) as err:
        load(dict(img_path=good, seg_map_path=str(seg), seg_fields=[],
                  reduce_zero_label=False))
    assert err.value.path == str(seg) and str(seg) in str(err.value)


class _Records(logging.Handler):
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


def test_corrupt_training_image_skipped_when_asked(tmp_path, scope_mmseg):
    """Opt-in: the dataset draws another sample; the skip is logged."""
    from data_factory import make_ade20k
    from mmseg.registry import DATASETS
    root = make_ade20k(str(tmp_path / 'ade'), num_train=3, num_val=1,
                       size=(32, 32))
    images = sorted(os.listdir(osp.join(root, 'images', 'training')))
    bad = osp.join(root, 'images', 'training', images[0])
    _corrupt_copy(bad, bad)
    pipeline = [dict(type='SafeLoad', skip_corrupt=True, transforms=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True)]),
        dict(type='PackSegInputs')]
    dataset = DATASETS.build(dict(
        type='ADE20KDataset', data_root=root, reduce_zero_label=True,
        data_prefix=dict(img_path='images/training',
                         seg_map_path='annotations/training'),
        pipeline=pipeline))
    assert dataset.get_data_info(0)['img_path'] == bad
    before = skipped_samples()
    with _Records() as log:
        sample = dataset[0]
    assert sample['data_samples'].img_path != bad
    assert skipped_samples() > before  # the random refetch may hit it again
    assert log.messages[-1].startswith(f'SafeLoad: skipped {bad}: ')
    assert log.messages[-1].endswith(
        f'({skipped_samples()} sample(s) skipped so far in this process)')
    # without the option the same file is an error naming it
    dataset.pipeline.transforms[0].skip_corrupt = False
    with pytest.raises(DataLoadError, match=re.escape(bad)):
        dataset[0]


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('videos')
    good = str(folder / 'good.mp4')
    writer = cv2.VideoWriter(good, cv2.VideoWriter_fourcc(*'mp4v'), 10,
                             (32, 24))
    assert writer.isOpened()
    for i in range(20):
        writer.write(np.full((24, 32, 3), i * 10, np.uint8))
    writer.release()
    return good, _corrupt_copy(good, folder / 'truncated.mp4')


def _video_load(clip_len, frame_interval, **kwargs):
    return SafeLoad(transforms=[
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=clip_len,
             frame_interval=frame_interval, num_clips=1, test_mode=True),
        dict(type='DecordDecode')], **kwargs)


def test_truncated_video_names_the_file(videos):
    from mmengine.registry import DefaultScope
    good, bad = videos
    with DefaultScope.overwrite_default_scope('mmaction'):
        load = _video_load(4, 2)
        assert len(load(dict(filename=good, start_index=0,
                             modality='RGB'))['imgs']) == 4
        with pytest.raises(DataLoadError) as err:
            load(dict(filename=bad, start_index=0, modality='RGB'))
    assert err.value.path == bad
    assert bad in str(err.value) and 'DecordInit' in str(err.value)


def test_video_shorter_than_the_clip(videos):
    from mmengine.registry import DefaultScope
    good, _ = videos
    with DefaultScope.overwrite_default_scope('mmaction'):
        with pytest.raises(DataLoadError) as err:
            _video_load(8, 4, short_video='error')(
                dict(filename=good, start_index=0, modality='RGB'))
        text = str(err.value)
        assert good in text and 'has 20 frames' in text
        assert 'clip_len=8 x frame_interval=4 = 32' in text
        # mmaction2's default: the frames are looped
        out = _video_load(8, 4)(dict(filename=good, start_index=0,
                                     modality='RGB'))
    assert len(out['imgs']) == 8


def test_safe_load_options_checked():
    with pytest.raises(ValueError, match='short_video'):
        SafeLoad(transforms=[dict(type='LoadImageFromFile')],
                 short_video='wrap')
    with pytest.raises(ValueError, match='non-empty list'):
        SafeLoad(transforms=dict(type='LoadImageFromFile'))


# ----------------------------------------------------------------------------
# configs and registries
# ----------------------------------------------------------------------------
def test_misspelled_type_suggests_the_registered_name(scope_mmseg):
    """What the tools and ICARRunner build under (``suggest_types``);
    mmengine's ``Registry.build`` itself keeps its message."""
    from mmengine.config import Config
    from mmseg.registry import MODELS, TRANSFORMS
    with pytest.raises(KeyError) as err:
        MODELS.build(dict(type='ResNetV1x', depth=18))
    assert 'did you mean' not in str(err.value)
    with pytest.raises(KeyError) as err, suggest_types():
        MODELS.build(dict(type='ResNetV1x', depth=18))
    assert "'ResNetV1x'" in str(err.value)
    assert re.search(r"did you mean ('\w+' or )*'ResNetV1c'", str(err.value))
    # nested inside a model: the inner error keeps one suggestion
    model = Config.fromfile(TINY).model
    model.decode_head.type = 'FCNHaed'
    with pytest.raises(KeyError) as err, suggest_types():
        MODELS.build(model)
    assert str(err.value).count('did you mean') == 1
    assert "'FCNHead'" in str(err.value)
    with pytest.raises(KeyError, match="did you mean 'LoadImageFromFile'"), \
            suggest_types():
        TRANSFORMS.build(dict(type='LoadImageFromFlie'))
    # a name registered only in another library comes scope-prefixed
    with pytest.raises(KeyError, match="did you mean 'mmdet.RetinaHead'"), \
            suggest_types():
        MODELS.build(dict(type='RetinaHaed'))


def test_misspelled_type_through_train_tool(tiny_ade_root, tmp_path):
    err = run_script('train.py', TINY, '--work-dir', str(tmp_path),
                     '--cfg-options', 'model.backbone.type=ResNetV1',
                     'train_cfg.max_iters=1',
                     f'train_dataloader.dataset.data_root={tiny_ade_root}')
    assert isinstance(err, KeyError)
    assert re.search(r"'ResNetV1' is not a registered model type; did you "
                     r"mean ('\w+' or )*'ResNetV1c'", str(err)), str(err)


def test_config_without_default_scope(tmp_path):
    config = tmp_path / 'no_scope.py'
    config.write_text(
        open(TINY).read().replace(
            "_base_ = ['../../configs/_base_/default_runtime_seg.py']", ''))
    err = run_script('train.py', str(config), '--work-dir',
                     str(tmp_path / 'w'))
    assert isinstance(err, KeyError)
    assert str(config) in str(err) and 'default_scope' in str(err)


# ----------------------------------------------------------------------------
# checkpoints and tool arguments
# ----------------------------------------------------------------------------
def _checkpoint(path, state_dict):
    torch.save(dict(meta=dict(iter=1), state_dict=state_dict), str(path))
    return str(path)


def test_truncated_checkpoint(tiny_ade_root, tmp_path):
    full = _checkpoint(tmp_path / 'full.pth',
                       {'backbone.stem.0.weight': torch.zeros(8, 3, 3, 3)})
    bad = _corrupt_copy(full, tmp_path / 'truncated.pth')
    err = run_script('test.py', TINY, bad, '--work-dir', str(tmp_path / 'w'),
                     '--cfg-options',
                     f'test_dataloader.dataset.data_root={tiny_ade_root}')
    assert isinstance(err, CheckpointError)
    assert bad in str(err) and 'truncated' in str(err)


def test_checkpoint_of_unknown_layout(tmp_path):
    path = _checkpoint(tmp_path / 'other.pth',
                       {'encoder.layer1.weight': torch.zeros(2)})
    err = run_script('convert_icar.py', path, str(tmp_path / 'out.pth'))
    assert isinstance(err, SystemExit) and err.code != 0
    text = message(err)
    assert path in text and 'unknown checkpoint layout' in text
    assert "'encoder.layer1.weight'" in text


def test_checkpoint_of_unknown_layout_as_pretrained_backbone(tmp_path):
    from icar_dense.models.backbones import ICARSwinTransformer
    path = _checkpoint(tmp_path / 'other.pth',
                       {'encoder.layer1.weight': torch.zeros(2)})
    swin = ICARSwinTransformer(
        arch=None, embed_dims=8, depths=(1, 1), num_heads=(1, 1),
        window_size=3, out_indices=(0, 1),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError) as err:
        swin.init_weights()
    assert path in str(err.value) and 'unknown checkpoint layout' in str(
        err.value)


def test_missing_checkpoint_for_convert_tool(tmp_path):
    path = str(tmp_path / 'icar_swinb.pth')
    err = run_script('convert_icar.py', path, str(tmp_path / 'out.pth'))
    assert isinstance(err, SystemExit)
    assert 'not found' in message(err) and path in message(err)


def test_vocabulary_option_with_missing_file(tmp_path):
    path = str(tmp_path / 'my_classes.txt')
    err = run_script('test.py', TINY, str(tmp_path / 'ckpt.pth'),
                     '--vocabulary', path, '--work-dir', str(tmp_path))
    assert isinstance(err, FileNotFoundError)
    assert path in str(err) and '--vocabulary' in str(err)


def test_vocabulary_argument_typos(tmp_path):
    """--vocabulary: a mistyped file is an error naming it; a word that is
    no known vocabulary is one class, said so out loud."""
    from icar_dense.engine.testing import read_vocabulary_argument
    for typo in ('classes.tx', str(tmp_path / 'nope' / 'classes')):
        with pytest.raises(FileNotFoundError, match=re.escape(repr(typo))):
            read_vocabulary_argument(typo)
    with pytest.warns(UserWarning, match="'lvis_v2' is not a known"):
        assert read_vocabulary_argument('lvis_v2')[2] == ['lvis_v2']
    assert len(read_vocabulary_argument('coco')[2]) == 80


def test_default_scope_outside_the_three_tasks():
    from mmengine.config import Config
    from icar_dense.engine.runtime import task_scope
    with pytest.raises(ValueError, match="'mmpretrain' is not one of"):
        task_scope(Config(dict(default_scope='mmpretrain')))


@pytest.mark.parametrize('content', [b'hello world\n', b'{"a": 1}\n',
                                     b'<html><body>404</body></html>'])
def test_non_torch_file_as_checkpoint(tmp_path, content):
    """A text / JSON / HTML file saved as .pth: 'not a torch file', named,
    not the advice for pickles that could run code."""
    from icar_dense.inmap import load_proxies
    from icar_dense.checkpoint import (CheckpointError,
                                       load_checkpoint_file)
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    for load in (load_checkpoint_file, load_proxies):
        with pytest.raises(CheckpointError) as err:
            load(str(path))
        message = str(err.value)
        assert repr(str(path)) in message and 'not a torch file' in message
        assert 'could run code' not in message


def test_misspelt_architecture_fields(tmp_path):
    """A misspelt RoBERTa config field or a Video Swin arch dict without
    depths: a KeyError naming them, not a silently different model."""
    from helpers_text import (build_tokenizer_dir, tiny_roberta_config,
                              tokenizer_size)
    from icar_dense.models.backbones import ICARSwinTransformer3D
    from icar_dense.models.text import RobertaTextEncoder
    tok = build_tokenizer_dir(str(tmp_path / 'tok'))
    config = dict(tiny_roberta_config(tokenizer_size(tok)), hidden_sise=64)
    with pytest.raises(KeyError, match="'hidden_sise'"):
        RobertaTextEncoder(config=config, tokenizer=tok, embed_dim=8)
    with pytest.raises(KeyError, match=r"lacks \['depths', 'num_heads'\]"):
        ICARSwinTransformer3D(arch=dict(embed_dims=16))
