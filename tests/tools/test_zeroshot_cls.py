"""Official iCAR checkpoint (vision + text) -> converter -> zero-shot tool."""
import json
import os
import os.path as osp

import cv2
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import SwinTransformer

import icar_dense  # noqa: F401
from conftest import check_ok, run_tool
from data_factory import load_photo
from helpers_text import build_tokenizer_dir, tiny_roberta_config
from icar_layout import icar_checkpoint

TINY_SWIN = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                 window_size=3)
EMBED = 16


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    """A tiny checkpoint in the exact official iCAR layout + tokenizer."""
    from transformers import RobertaConfig, RobertaModel
    root = tmp_path_factory.mktemp('icar')
    tokenizer = build_tokenizer_dir(str(root / 'tokenizer'),
                                    ['a photo of a coffee.'])
    vocab = json.load(open(osp.join(tokenizer, 'vocab.json')))
    assert len(vocab) > 100, 'tokenizer came back degenerate'
    torch.manual_seed(0)
    swin = SwinTransformer(**TINY_SWIN, out_indices=(0, 1, 2, 3))
    swin.init_weights()
    roberta_cfg = tiny_roberta_config(len(vocab))
    roberta = RobertaModel(RobertaConfig(**roberta_cfg),
                           add_pooling_layer=False)
    text_proj = torch.randn(EMBED, roberta_cfg['hidden_size'])
    text_sd = {'backbone.' + k: v for k, v in roberta.state_dict().items()}
    text_sd['projector.weight'] = text_proj
    ckpt = icar_checkpoint(swin.state_dict(), 3, torch.randn(EMBED, 128),
                           text_sd)
    path = str(root / 'icar_tiny.pth')
    torch.save(ckpt, path)
    return dict(path=path, tokenizer=tokenizer, roberta=roberta,
                roberta_cfg=roberta_cfg, text_proj=text_proj, root=root)


def _reference_text_embeddings(official, prompts):
    from transformers import RobertaTokenizerFast
    tok = RobertaTokenizerFast.from_pretrained(official['tokenizer'])
    batch = tok([p.lower() for p in prompts], padding=True, truncation=True,
                max_length=16, return_tensors='pt')
    with torch.no_grad():
        hidden = official['roberta'].eval()(**batch).last_hidden_state
    mask = batch['attention_mask'].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return F.normalize(pooled @ official['text_proj'].t(), dim=-1)


def _classifier(official, checkpoint, prefix):
    from icar_dense.models.text import TextClassifier
    clf = TextClassifier(
        in_channels=128, embed_dim=EMBED,
        text_encoder=dict(type='RobertaTextEncoder',
                          config=official['roberta_cfg'],
                          tokenizer=official['tokenizer'], max_length=16,
                          embed_dim=EMBED),
        vocabulary=['cat', 'dog'], templates='single',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                      **(dict(prefix=prefix) if prefix else {})))
    clf.init_weights()
    return clf.eval()


def test_text_tower_after_conversion_matches_unconverted(official, tmp_path):
    converted = str(tmp_path / 'converted.pth')
    proc = check_ok(run_tool(['python', 'tools/convert_icar.py',
                              official['path'], converted]))
    assert '[text] matched' in proc.stdout
    assert '[backbone] matched' in proc.stdout
    assert 'missing 0; unexpected 0' in proc.stdout
    expected = _reference_text_embeddings(
        official, ['a photo of cat.', 'a photo of dog.'])
    for path, prefix in ((converted, 'text_classifier.'),
                         (official['path'], None)):
        clf = _classifier(official, path, prefix)
        with torch.no_grad():
            got = clf.class_embeddings()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_converter_rejects_unknown_layout(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'model': {'fc.weight': torch.zeros(1)}}, bad)
    proc = run_tool(['python', 'tools/convert_icar.py', str(bad),
                     str(tmp_path / 'out.pth')])
    assert proc.returncode != 0
    assert 'unknown checkpoint layout' in proc.stderr
    assert 'bad.pth' in proc.stderr


def _image_folder(root):
    for cls, photos in (('cat', (1, 2)), ('coffee', (2, 3))):
        os.makedirs(osp.join(root, cls), exist_ok=True)
        for i in photos:
            cv2.imwrite(osp.join(root, cls, f'{i}.jpg'),
                        load_photo(i, (40, 40)))
    return root


@pytest.mark.parametrize('arch', ['swinb', 'swint'])
def test_zeroshot_tool_with_inmap(official, tmp_path, arch):
    data = _image_folder(str(tmp_path / 'images'))
    cfg = tmp_path / 'zs_tiny.py'
    base = osp.abspath(f'configs/cls/icar_{arch}_zeroshot_cls.py')
    cfg.write_text(f"""
_base_ = [{base!r}]
checkpoint = {official['path']!r}
model = dict(
    backbone=dict(arch=None, embed_dims=16, depths=(1, 1, 1, 1),
                  num_heads=(1, 1, 1, 1), window_size=3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    text_classifier=dict(
        in_channels=128, embed_dim={EMBED},
        text_encoder=dict(_delete_=True, type='RobertaTextEncoder',
                          config={official['roberta_cfg']!r},
                          tokenizer={official['tokenizer']!r}, max_length=16,
                          embed_dim={EMBED}),
        templates='single',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
data = dict(resize=48, crop_size=40, batch_size=2, num_workers=0)
inmap = dict(iters=20)
""")
    out = str(tmp_path / 'zs.json')
    classes = tmp_path / 'classes.txt'
    classes.write_text('cat: a small domesticated feline\ncoffee\n')
    proc = check_ok(run_tool(['python', 'tools/zeroshot_cls.py', str(cfg),
                              data, '--classes', str(classes), '--inmap',
                              '--out', out, '--device', 'cpu']))
    result = json.load(open(out))
    assert result['num_images'] == 4 and result['num_classes'] == 2
    for key in ('text_proxy', 'inmap_no_sinkhorn', 'inmap_full'):
        assert 0.0 <= result[key]['top1'] <= 100.0
        assert result[key]['top5'] == 100.0  # two classes
    assert '"top1"' in proc.stdout
    # no per-parameter "same before and after init_weights" report
    assert 'before and after' not in proc.stdout + proc.stderr

    classes.write_text('cat\ncoffee\ndog\n')
    proc = run_tool(['python', 'tools/zeroshot_cls.py', str(cfg), data,
                     '--classes', str(classes), '--device', 'cpu'])
    assert proc.returncode != 0 and '3 classes' in proc.stderr
