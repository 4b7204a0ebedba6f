"""The iCAR authors' video prompts and fine-tuning recipes, and the
Kinetics-600 novel class list of their zero-shot protocol.

* ``templates='kinetics28'`` is exactly the template list of the authors'
  video language head (written out below from weiyx16/Video-Swin-Transformer,
  ``mmaction/models/heads/language_head.py``), the default of every video
  config; training draws one template per class, testing averages them all.
* The Kinetics-400 fine-tuning configs train the text tower at the
  backbone's 0.1 x lr, the ADE20K fine-tuning configs train it at the base
  lr, the open-vocabulary and zero-shot configs keep it frozen: each config's
  model and optimizer wrapper are built (tiny sizes) and the learning rate of
  every parameter kind is checked against the authors' custom_keys rule.
* The memory figures written in the configs are recomputed from the
  roberta-base shape (a model on the meta device: no weights, no time).
"""
import copy
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

import icar_dense  # noqa: F401
from conftest import REPO

ACTION = osp.join(REPO, 'configs', 'action')
SEG = osp.join(REPO, 'configs', 'seg')

# Written from the authors' file (LanguageHead.__init__, self.templates =
# [...]; the ActionCLIP list above it is commented out there).
AUTHORS_VIDEO_TEMPLATES = [
    'a photo of {}.',
    'a photo of a person {}.',
    'a photo of a person using {}.',
    'a photo of a person doing {}.',
    'a photo of a person during {}.',
    'a photo of a person performing {}.',
    'a photo of a person practicing {}.',
    'a video of {}.',
    'a video of a person {}.',
    'a video of a person using {}.',
    'a video of a person doing {}.',
    'a video of a person during {}.',
    'a video of a person performing {}.',
    'a video of a person practicing {}.',
    'a example of {}.',
    'a example of a person {}.',
    'a example of a person using {}.',
    'a example of a person doing {}.',
    'a example of a person during {}.',
    'a example of a person performing {}.',
    'a example of a person practicing {}.',
    'a demonstration of {}.',
    'a demonstration of a person {}.',
    'a demonstration of a person using {}.',
    'a demonstration of a person doing {}.',
    'a demonstration of a person during {}.',
    'a demonstration of a person performing {}.',
    'a demonstration of a person practicing {}.',
]

ACTION_CONFIGS = sorted(glob.glob(osp.join(ACTION, '*.py')))
K400_FINETUNE = ['icar_swinb_k400_finetune.py', 'icar_swint_k400_finetune.py']
SEG_FINETUNE = [
    'icar_swinb_upernet_ade20k_160k.py', 'icar_swint_upernet_ade20k_160k.py'
]
SEG_FROZEN = [
    'icar_swinb_upernet_ade20k_ov_split.py',
    'icar_swint_upernet_ade20k_ov_split.py', 'example_custom_ov.py',
    'icar_swinb_upernet_ade20k_zeroshot.py',
    'icar_swint_upernet_ade20k_zeroshot.py'
]

# roberta-base (no pooler) + the 768 -> 256 projector
ROBERTA_BASE_TOWER = 124_055_040 + 768 * 256

# one torch thread: tests/conftest.py
pytestmark = pytest.mark.usefixtures('one_thread')


# ----------------------------------------------------------------------------
# templates
# ----------------------------------------------------------------------------
def test_kinetics28_is_the_authors_list():
    from icar_dense.models.text import get_templates
    from icar_dense.models.text.templates import KINETICS28_TEMPLATES
    assert get_templates('kinetics28') == AUTHORS_VIDEO_TEMPLATES
    assert list(KINETICS28_TEMPLATES) == AUTHORS_VIDEO_TEMPLATES
    assert len(set(AUTHORS_VIDEO_TEMPLATES)) == 28
    assert get_templates('single') == ['a photo of {}.']  # still selectable
    # a copy: changing the result does not change the set
    get_templates('kinetics28').append('x {}')
    assert len(get_templates('kinetics28')) == 28


@pytest.mark.parametrize(
    'path', ACTION_CONFIGS, ids=[osp.basename(p) for p in ACTION_CONFIGS])
def test_video_configs_use_kinetics28(path):
    cfg = Config.fromfile(path)
    assert cfg.model.cls_head.text_classifier.templates == 'kinetics28'
    # the single template by cfg-options, as the base config says
    cfg.merge_from_dict(
        {'model.cls_head.text_classifier.templates': 'single'})
    assert cfg.model.cls_head.text_classifier.templates == 'single'


def _classifier(tok_dir, freeze, templates='kinetics28'):
    from helpers_text import tiny_roberta_encoder_cfg

    from icar_dense.models.text import TextClassifier
    torch.manual_seed(0)
    return TextClassifier(
        in_channels=8,
        embed_dim=16,
        text_encoder=tiny_roberta_encoder_cfg(tok_dir),
        vocabulary=['juggling balls', 'archery', 'abseiling'],
        templates=templates,
        freeze_text_encoder=freeze)


@pytest.mark.parametrize('freeze', [False, True])
def test_kinetics28_train_draws_one_per_class_test_ensembles(tok_dir, freeze):
    from helpers_text import EncodeCounter
    clf = _classifier(tok_dir, freeze)
    names = clf.class_names
    prompts = {
        c: [t.replace('{}', c) for t in AUTHORS_VIDEO_TEMPLATES]
        for c in names
    }
    counter = EncodeCounter(clf.text_encoder)
    clf.train()
    drawn = [set() for _ in names]
    for _ in range(12):
        before = len(counter.texts)
        embeds = clf.class_embeddings()
        assert embeds.shape == (3, 16)
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))
        if not freeze:
            # one prompt per class, encoded with gradients each step
            texts = counter.texts[before:]
            assert len(texts) == 3 and embeds.requires_grad
            for c, text in enumerate(texts):
                assert text in prompts[names[c]]
                drawn[c].add(text)
    if freeze:
        # all 28 x 3 prompts encoded once; a draw is an index into them
        assert counter.calls == 1 and len(counter.texts) == 84
        drawn_idx = clf.prompts.sample(torch.Generator().manual_seed(1))
        for c, i in enumerate(drawn_idx.tolist()):
            assert clf.prompts.texts[i] in prompts[names[c]]
    else:
        assert all(len(d) > 1 for d in drawn)  # random, not a fixed one
    # test: normalise each of the 28 prompts, average, normalise again
    clf.eval()
    with torch.no_grad():
        got = clf.class_embeddings()
        want = []
        for c in names:
            embeds = clf.text_encoder.encode(prompts[c]).float()
            mean = torch.nn.functional.normalize(embeds, dim=-1).mean(0)
            want.append(torch.nn.functional.normalize(mean, dim=0))
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-6)
    assert clf.prompts.counts.tolist() == [28, 28, 28]


# ----------------------------------------------------------------------------
# recipes: who trains the text tower, at which learning rate
# ----------------------------------------------------------------------------
def _groups(wrapper):
    """id(param) -> (lr, weight_decay) of its optimizer group."""
    out = {}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            out[id(param)] = (group['lr'], group.get('weight_decay', 0.))
    return out


@pytest.fixture(scope='module')
def action_env(tmp_path_factory):
    from helpers_text import build_tokenizer_dir, tiny_roberta_config
    from helpers_text import tokenizer_size
    tok = build_tokenizer_dir(
        str(tmp_path_factory.mktemp('tok')),
        [t.replace('{}', 'archery') for t in AUTHORS_VIDEO_TEMPLATES])
    return dict(tok=tok, roberta=tiny_roberta_config(tokenizer_size(tok)))


def _tiny_action_model(cfg, env):
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.update(
        arch=None,
        embed_dims=16,
        depths=(1, 1, 2, 1),
        num_heads=(1, 1, 2, 2),
        window_size=(2, 2, 2),
        pretrained=None,
        drop_path_rate=0.)
    model_cfg.cls_head.in_channels = 128
    clf = model_cfg.cls_head.text_classifier
    clf.update(in_channels=128, embed_dim=16, init_cfg=None)
    clf.vocabulary = ['archery', 'abseiling']
    model_cfg.cls_head.num_classes = 2
    clf.text_encoder = dict(
        type='RobertaTextEncoder',
        config=env['roberta'],
        tokenizer=env['tok'],
        max_length=16,
        embed_dim=16)
    return _build('mmaction', model_cfg)


def _build(scope, cfg):
    """Build a model in ``scope`` without leaving it as the default scope
    of the later tests."""
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg)


@pytest.mark.parametrize('name', K400_FINETUNE)
def test_k400_finetune_trains_text_tower_at_backbone_lr(name, action_env):
    """The authors' custom_keys, longest key first and alone: every
    `backbone` parameter (Swin and RoBERTa) at 0.1 x lr with decay; Swin
    bias tables at the full lr without decay; projections at the full lr."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(ACTION, name))
    assert cfg.model.cls_head.text_classifier.freeze_text_encoder is False
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys.backbone.lr_mult == 0.1
    model = _tiny_action_model(cfg, action_env)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = _groups(wrapper)
    lr, wd = 3e-4, 0.05
    named = dict(model.named_parameters())
    tower = {
        k: p
        for k, p in named.items()
        if k.startswith('cls_head.text_classifier.text_encoder.backbone.')
    }
    assert len(tower) > 20
    assert any('LayerNorm' in k for k in tower)
    for key, param in tower.items():
        assert param.requires_grad, key
        assert groups[id(param)] == pytest.approx((0.1 * lr, wd)), key
    full = ('cls_head.text_classifier.text_encoder.projector.weight',
            'cls_head.text_classifier.visual_proj.weight')
    for key in full:
        assert named[key].requires_grad
        assert groups[id(named[key])] == pytest.approx((lr, wd)), key
    swin = {k: p for k, p in named.items() if k.startswith('backbone.')}
    tables = [k for k in swin if 'relative_position_bias_table' in k]
    norms = [k for k in swin if 'norm' in k]
    assert tables and norms
    for key, param in swin.items():
        want = ((lr, 0.) if key in tables else (0.1 * lr, wd))
        assert groups[id(param)] == pytest.approx(want), key
    # a training step updates the tower (gradients reach RoBERTa)
    model.train()
    clf = model.cls_head.text_classifier
    loss = clf(torch.randn(4, 128)).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for p in tower.values())


# the test-only configs (zero-shot); demo_videos_tiny.py is a K400
# fine-tuning config shrunk for docs/getting_started.md: it trains
ZEROSHOT_CONFIGS = [
    p for p in ACTION_CONFIGS
    if 'finetune' not in p and not osp.basename(p).startswith('demo_')
]


@pytest.mark.parametrize(
    'path', ZEROSHOT_CONFIGS, ids=lambda p: osp.basename(p))
def test_video_zeroshot_configs_keep_text_tower_frozen(path, action_env):
    cfg = Config.fromfile(path)
    assert cfg.model.cls_head.text_classifier.freeze_text_encoder is True
    assert cfg.get('optim_wrapper') is None  # test only
    model = _tiny_action_model(cfg, action_env)
    encoder = model.cls_head.text_classifier.text_encoder
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.fixture(scope='module')
def seg_env(tmp_path_factory, tiny_ade_root):
    from helpers_seg import make_icar_checkpoint, make_tokenizer
    root = tmp_path_factory.mktemp('seg_recipes')
    tok = make_tokenizer(str(root / 'tok'))
    icar = make_icar_checkpoint(root / 'icar.pth', tok)
    return dict(root=root, tok=tok, icar=icar, data=tiny_ade_root)


def _tiny_seg(name, env):
    from helpers_seg import shrink
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(SEG, name))
    tiny = shrink(cfg, env['data'], env['root'] / name[:-3],
                  env['icar']['path'], env['tok'])
    tiny.model.backbone.init_cfg = None
    tiny.model.decode_head.text_classifier.init_cfg = None
    if tiny.model.get('auxiliary_head'):
        tiny.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
        tiny.model.auxiliary_head.norm_cfg = dict(
            type='BN', requires_grad=True)
    model = _build('mmseg', tiny.model)
    wrapper = (
        build_optim_wrapper(model, tiny.optim_wrapper)
        if tiny.get('optim_wrapper') else None)
    return cfg, model, wrapper


@pytest.mark.parametrize('name', SEG_FINETUNE + SEG_FROZEN)
def test_seg_text_tower_recipes(name, seg_env):
    cfg, model, wrapper = _tiny_seg(name, seg_env)
    clf = model.decode_head.text_classifier
    params = list(clf.text_encoder.parameters())
    trains = name in SEG_FINETUNE
    assert cfg.model.decode_head.text_classifier.freeze_text_encoder is \
        (not trains)
    assert all(p.requires_grad is trains for p in params)
    if 'zeroshot' in name:
        assert wrapper is None
        return
    groups = _groups(wrapper)
    lr = cfg.optim_wrapper.optimizer.lr
    assert lr == 6e-5
    for key, param in clf.text_encoder.named_parameters():
        if trains:
            # no multiplier: the authors' segmentation configs have none
            assert groups[id(param)][0] == pytest.approx(lr), key
        else:
            assert id(param) not in groups, key  # frozen: not optimized
    if trains:
        # the decode head and the auxiliary head (sharing the tower) both
        # send gradients into it
        model.train()
        x = torch.randn(2, 3, 32, 32)
        feats = model.extract_feat(x)
        loss = model.decode_head.forward(feats).logsumexp(1).mean() + \
            model.auxiliary_head.forward(feats).logsumexp(1).mean()
        loss.backward()
        assert all(p.grad is not None for p in params)


# ----------------------------------------------------------------------------
# the memory figures written in the configs
# ----------------------------------------------------------------------------
def test_memory_cost_figures_in_configs():
    from transformers import RobertaConfig, RobertaModel
    arch = Config.fromfile(
        osp.join(REPO, 'configs/_base_/models/roberta_base_arch.py'))
    with torch.device('meta'):
        roberta = RobertaModel(
            RobertaConfig(**arch.roberta_base), add_pooling_layer=False)
    params = sum(p.numel() for p in roberta.parameters()) + 768 * 256
    assert params == ROBERTA_BASE_TOWER
    trained = params * 16  # fp32 weights + gradients + AdamW's 2 moments
    frozen = params * 4  # fp32 weights only
    figures = dict(
        params=f'{params / 1e6:.2f}M',
        trained=f'{trained / 1e6:.0f} MB',
        frozen=f'{frozen / 1e6:.0f} MB',
        extra=f'+{(trained - frozen) / 1e6:.0f} MB')
    assert figures == dict(
        params='124.25M', trained='1988 MB', frozen='497 MB',
        extra='+1491 MB')
    for path in (osp.join(ACTION, 'icar_swinb_k400_finetune.py'),
                 osp.join(SEG, 'icar_swinb_upernet_ade20k_160k.py')):
        with open(path) as f:
            text = re.sub(r'\s*\n#\s*', ' ', f.read())
        for figure in figures.values():
            assert figure in text, (path, figure)
    for name in ('icar_swint_k400_finetune.py', ):
        with open(osp.join(ACTION, name)) as f:
            assert '+1491 MB' in re.sub(r'\s*\n#\s*', ' ', f.read())


# ----------------------------------------------------------------------------
# the Kinetics-600 novel classes of the authors' protocol
# ----------------------------------------------------------------------------
def test_novel_classes_are_computed_from_the_two_lists():
    from icar_dense.datasets.action_zeroshot import novel_classes
    from icar_dense.models.text import load_vocabulary
    k400 = load_vocabulary('kinetics400').names
    assert len(k400) == 400
    assert 'passing American football (not in game)' in k400
    # a Kinetics-600-like list: K400 classes (one with K600's lower-case
    # spelling, one with underscores), renamed ones and new ones
    k600 = [
        'abseiling', 'acting in play', 'passing american football (not in '
        'game)', 'dyeing hair', 'air_drumming', 'zumba', 'yoga',
        'arguing'
    ]
    assert novel_classes(k600, k400) == [
        'acting in play', 'passing american football (not in game)',
        'dyeing hair', 'arguing'
    ]
    assert novel_classes(k600, k400, ignore_case=True) == [
        'acting in play', 'dyeing hair', 'arguing'
    ]


def test_authors_k600_config_computes_the_list():
    cfg = Config.fromfile(
        osp.join(ACTION, 'icar_swinb_k600novel_zeroshot_authors.py'))
    dataset = cfg.test_dataloader.dataset
    assert dataset.exclude_classes == 'kinetics400'
    assert dataset.classes is None and dataset.exclude_ignore_case is False
    assert dataset.label_names.endswith('kinetics600_classnames.txt')
    assert cfg.test_cfg.type == 'MultiSplitTestLoop'
    assert cfg.test_cfg.splits == [dict(name='k600_novel')]
    for kind in ('ucf101', 'hmdb51'):
        split1 = Config.fromfile(
            osp.join(ACTION, f'icar_swinb_{kind}_zeroshot_split1.py'))
        three = Config.fromfile(
            osp.join(ACTION, f'icar_swinb_{kind}_zeroshot.py'))
        assert split1.test_cfg.splits == three.test_cfg.splits[:1]
        assert split1.test_cfg.splits[0].ann_file.endswith(
            'val_split_1_videos.txt')


def test_one_split_is_one_evaluation():
    from icar_dense.evaluation import summarize_splits
    one = summarize_splits({'k600_novel': {'acc/top1': 0.5, 'acc/top5': 0.9}})
    assert one == {
        'acc/top1': 0.5,
        'acc/top5': 0.9,
        'k600_novel/acc/top1': 0.5,
        'k600_novel/acc/top5': 0.9
    }
    two = summarize_splits({'a': {'acc/top1': 0.5}, 'b': {'acc/top1': 0.7}})
    assert two['acc/top1_mean'] == pytest.approx(0.6)
    assert 'acc/top1' not in two
