"""The iCAR checkpoint file exactly as the authors' training code saves it.

``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` with ``args`` an
``argparse.Namespace`` (``tests/icar_layout.py``), saved with plain
``torch.save``: every entry point loads it without running code, names the
skipped entries in one line, and lists the authors' buffers and unused
weights in one "rebuilt / unused" line instead of missing / unexpected keys.
A file that really needs code stays refused, with a plain-text message.
"""
import argparse
import os
import os.path as osp
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import REPO, check_ok, run_tool  # noqa: E402
from helpers_seg import (TINY_SWIN, make_icar_checkpoint,  # noqa: E402
                         make_tokenizer, shrink)
from icar_layout import captured_mm_log, icar_checkpoint  # noqa: E402

import icar_dense  # noqa: E402,F401
from icar_dense.checkpoint import (CheckpointError,  # noqa: E402
                                   classify_checkpoint_keys,
                                   load_checkpoint_file)

pytestmark = pytest.mark.usefixtures('one_thread')

TOP_LEVEL = ('optimizer', 'epoch', 'scaler', 'args')
BUFFERS = ('relative_coords', 'atten_mask_matrix')
TEXT_EXTRAS = ('position_ids', 'pooler')


@pytest.fixture(scope='module')
def authors(tmp_path_factory):
    """A tiny Swin + RoBERTa file in the authors' layout, and its parts."""
    root = tmp_path_factory.mktemp('authors')
    tok = make_tokenizer(str(root / 'tokenizer'))
    parts = make_icar_checkpoint(root / 'icar_authors.pth', tok)
    return dict(parts, tok=tok, root=root)


def _one(messages, needle):
    found = [m for m in messages if needle in m]
    assert len(found) == 1, (needle, messages)
    return found[0]


def _skip_line(messages):
    line = _one(messages, "using its 'model' entry")
    for entry in TOP_LEVEL:
        assert entry in line, line
    assert 'args (Namespace)' in line
    return line


def _no_unexpected_buffers(messages):
    """No line calls a recognised buffer/unused weight missing or
    unexpected (the loaders' own lines and mmengine's warning)."""
    for message in messages:
        if 'rebuilt / unused' in message:
            continue
        for word in ('unexpected', 'missing'):
            if word not in message:
                continue
            tail = message[message.index(word):]
            for name in BUFFERS + TEXT_EXTRAS + ('relative_position_index',
                                                 'args', 'optimizer'):
                assert name not in tail, (name, message)


def test_fixture_is_the_authors_layout(authors):
    """What the file holds, as written by the authors' saver."""
    raw = torch.load(authors['path'], weights_only=False)
    assert list(raw) == ['model', 'optimizer', 'epoch', 'scaler', 'args']
    assert isinstance(raw['args'], argparse.Namespace)
    assert raw['args'].cfg.endswith('.yaml') and raw['epoch'] == 30
    assert set(raw['scaler']) >= {'scale', 'growth_factor', '_growth_tracker'}
    assert set(raw['optimizer']) == {'state', 'param_groups'}
    model = raw['model']
    depths, window = TINY_SWIN['depths'], TINY_SWIN['window_size']
    coords = [k for k in model if k.endswith('.attn.relative_coords')]
    assert len(coords) == sum(depths)
    assert all(model[k].dtype == torch.int64 and model[k].shape ==
               (window**2, window**2) for k in coords)
    masks = [k for k in model if k.endswith('atten_mask_matrix')]
    # 224 px: map 28 > window 3 in stage 1, whose block 1 is the only odd
    # block; (nW, N, N) on the map padded to whole windows
    assert masks == ['visual_model.backbone.layers.1.blocks.1.'
                     'atten_mask_matrix']
    assert model[masks[0]].shape == (10 * 10, 9, 9)
    assert model['visual_model.backbone.pos_embed'].shape == (1, 56 * 56, 16)
    assert model['sentence_model.backbone.embeddings.position_ids'].dtype == \
        torch.int64
    assert 'sentence_model.backbone.pooler.dense.weight' in model
    # plain torch.load refuses it: that is the problem being solved
    with pytest.raises(Exception, match='Namespace'):
        torch.load(authors['path'], weights_only=True)


def test_masks_follow_the_authors_rule(tmp_path):
    """Odd blocks of stages whose map is larger than the window only."""
    from mmdet.models.backbones import SwinTransformer
    swin = SwinTransformer(embed_dims=8, depths=(2, 2, 2, 2),
                           num_heads=(1, 1, 1, 1), window_size=7)
    model = icar_checkpoint(swin.state_dict(), 3, training_state=False)
    masks = {k: v for k, v in model['model'].items()
             if k.endswith('atten_mask_matrix')}
    prefix = 'visual_model.backbone.layers.'
    # 224 px with window 7: maps 56 (64 windows), 28 (16), 14 (4), 7 (none)
    assert {k: tuple(v.shape) for k, v in masks.items()} == {
        prefix + '0.blocks.1.atten_mask_matrix': (64, 49, 49),
        prefix + '1.blocks.1.atten_mask_matrix': (16, 49, 49),
        prefix + '2.blocks.1.atten_mask_matrix': (4, 49, 49),
    }
    for mask in masks.values():
        assert set(mask.unique().tolist()) == {0.0, -100.0}
        assert torch.equal(mask, mask.transpose(1, 2))
    # the first window does not wrap around: nothing masked
    assert masks[prefix + '0.blocks.1.atten_mask_matrix'][0].eq(0).all()


def test_loads_without_code_and_names_the_skipped_entries(authors):
    with captured_mm_log() as messages:
        checkpoint = load_checkpoint_file(authors['path'])
    assert list(checkpoint) == ['model']
    _skip_line(messages)
    assert len(messages) == 1


class _Payload:
    """Unpickling this creates ``marker``: stands for any code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _unsafe_files(tmp_path, marker):
    """The authors' entries (accepted) plus one object that needs code."""
    base = dict(
        model={'visual_model.backbone.patch_embed.proj.weight':
               torch.zeros(4, 3, 4, 4)},
        epoch=1, args=argparse.Namespace(cfg='x.yaml'))
    paths = {}
    for name, extra in (('class', _Payload(str(marker))),
                        ('function', os.system)):
        paths[name] = str(tmp_path / f'{name}.pth')
        torch.save(dict(base, hook=extra), paths[name])
    return paths


def test_code_is_refused_in_plain_text(tmp_path):
    marker = tmp_path / 'pwned'
    paths = _unsafe_files(tmp_path, marker)
    for kind, needle in (('class', 'io.open'),
                         ('function', 'system')):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint_file(paths[kind])
        text = str(err.value)
        assert '\x1b' not in text and '[1m' not in text, text
        assert repr(paths[kind]) in text and needle in text
        assert 'could run code' in text
        assert f'tools/resave_trusted_checkpoint.py {paths[kind]}' in text
        # the tool's message too
        proc = run_tool(['python', 'tools/convert_icar.py', paths[kind],
                         str(tmp_path / 'out.pth')])
        assert proc.returncode != 0
        assert '\x1b' not in proc.stderr and 'could run code' in proc.stderr
    assert not marker.exists()


def test_backbone_init_cfg(authors):
    from icar_dense.models.backbones import ICARSwinTransformer
    model = ICARSwinTransformer(
        **TINY_SWIN, init_cfg=dict(type='Pretrained',
                                   checkpoint=authors['path']))
    with captured_mm_log() as messages:
        model.init_weights()
    _skip_line(messages)
    line = _one(messages, 'rebuilt / unused')
    for name in BUFFERS:
        assert name in line
    _no_unexpected_buffers(messages)
    for key, value in authors['swin'].items():
        # norm0..2: not in the file (the original Swin has one final norm)
        if 'relative_position_index' not in key and \
                not key.startswith(('norm0.', 'norm1.', 'norm2.')):
            torch.testing.assert_close(model.state_dict()[key], value)


def test_text_classifier_init_cfg(authors):
    from helpers_text import tiny_roberta_encoder_cfg

    from icar_dense.models.text import TextClassifier
    clf = TextClassifier(
        in_channels=128, embed_dim=256,
        text_encoder=tiny_roberta_encoder_cfg(authors['tok'], embed_dim=256),
        vocabulary=['wall', 'sky'], templates='single',
        init_cfg=dict(type='Pretrained', checkpoint=authors['path']))
    with captured_mm_log() as messages:
        clf.init_weights()
    _skip_line(messages)
    line = _one(messages, 'rebuilt / unused')
    assert 'position_ids' in line and '2 x pooler' in line
    _no_unexpected_buffers(messages)
    assert 'unexpected' not in _one(messages, 'TextClassifier: loaded')
    torch.testing.assert_close(clf.visual_proj.weight, authors['proj'])
    for key, value in authors['text'].items():
        torch.testing.assert_close(clf.text_encoder.state_dict()[key], value)


def test_load_from_through_the_runner(authors, tiny_ade_root, tmp_path):
    """``load_from`` / ``tools/test.py CONFIG FILE``: load_checkpoint of the
    runner the tools build (``ICARRunner``: the safe loader), then the
    segmentor's mapping."""
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/seg/icar_swint_upernet_ade20k_zeroshot.py'))
    object.__setattr__(cfg, '_format_python_code', False)
    cfg = shrink(cfg, tiny_ade_root, tmp_path / 'run', authors['path'],
                 authors['tok'])
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.text_classifier.init_cfg = None
    cfg.load_from = authors['path']
    assert cfg.runner_type == 'ICARRunner'  # as tools/train.py builds it
    runner = RUNNERS.build(cfg)
    with captured_mm_log() as messages:
        runner.load_checkpoint(cfg.load_from)
    _skip_line(messages)
    line = _one(messages, 'rebuilt / unused')
    for name in BUFFERS + TEXT_EXTRAS + ('pos_embed', ):
        assert name in line, (name, line)
    _no_unexpected_buffers(messages)
    model = runner.model
    torch.testing.assert_close(
        model.backbone.patch_embed.projection.weight,
        authors['swin']['patch_embed.projection.weight'])
    torch.testing.assert_close(
        model.decode_head.text_classifier.text_encoder.projector.weight,
        authors['text']['projector.weight'])


def test_convert_tool(authors, tmp_path):
    out = str(tmp_path / 'converted.pth')
    proc = check_ok(run_tool(['python', 'tools/convert_icar.py',
                              authors['path'], out]))
    text = proc.stdout
    _skip_line(text.splitlines())
    line = _one(text.splitlines(), '[rebuilt / unused]')
    for name in BUFFERS + TEXT_EXTRAS:
        assert name in line, (name, line)
    norms = _one(text.splitlines(), '[backbone] norm0, norm1, norm2')
    assert 'initialised' in norms and 'out_indices' in norms
    assert '[backbone] matched' in text and 'missing 0; unexpected 0' in text
    converted = load_checkpoint_file(out)['state_dict']
    assert not classify_checkpoint_keys(
        k for k in converted if k != 'backbone.pos_embed')[0]


def test_demo_api(authors, tiny_ade_root, tmp_path):
    """``tools/demo.py IMAGE CONFIG FILE`` (segmentation: zero-shot from the
    authors' file); the detection demo says why it cannot use it."""
    from mmengine.config import Config

    from icar_dense.apis.det_demo import load_detector_checkpoint
    from icar_dense.apis.seg_demo import build_segmentor
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/seg/icar_swint_upernet_ade20k_zeroshot.py'))
    object.__setattr__(cfg, '_format_python_code', False)
    cfg = shrink(cfg, tiny_ade_root, tmp_path / 'demo', '/nonexistent.pth',
                 authors['tok'])
    with captured_mm_log() as messages:
        model = build_segmentor(cfg, authors['path'])
    _skip_line(messages)
    assert 'atten_mask_matrix' in _one(messages, 'rebuilt / unused')
    _no_unexpected_buffers(messages)
    torch.testing.assert_close(
        model.decode_head.text_classifier.visual_proj.weight, authors['proj'])
    with pytest.raises(CheckpointError, match='pre-training checkpoint'):
        load_detector_checkpoint(torch.nn.Linear(1, 1), authors['path'])


def test_resave_keeps_the_namespace_fields(authors, tmp_path):
    out = str(tmp_path / 'plain.pth')
    check_ok(run_tool(['python', 'tools/resave_trusted_checkpoint.py',
                       authors['path'], out]))
    raw = torch.load(out, weights_only=True)
    assert raw['args']['batch_size'] == 128


def test_classifier_groups():
    groups, rest = classify_checkpoint_keys([
        'layers.0.blocks.0.attn.relative_coords',
        'stages.0.blocks.0.attn.w_msa.relative_position_index',
        'layers.0.blocks.1.atten_mask_matrix', 'layers.0.blocks.1.attn_mask',
        'pos_embed', 'backbone.absolute_pos_embed',
        'text_encoder.backbone.embeddings.position_ids',
        'text_encoder.backbone.pooler.dense.bias', 'decode_head.conv.weight'
    ])
    assert {k: len(v) for k, v in groups.items()} == dict(
        relative_coords=2, atten_mask_matrix=2, pos_embed=1, position_ids=1,
        pooler=1)
    assert rest == ['backbone.absolute_pos_embed', 'decode_head.conv.weight']


if __name__ == '__main__':
    sys.exit(pytest.main([__file__, '-q']))
