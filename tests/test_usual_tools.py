"""print_config, analyze_logs and build_vocab_embeddings."""
import glob
import os.path as osp

import torch

import icar_dense  # noqa: F401
from conftest import check_ok, run_tool
from helpers_text import build_tokenizer_dir, tiny_roberta_encoder_cfg

TINY_SEG = 'tests/configs/tiny_seg_fcn.py'


def test_print_config_resolves_base_and_options(tmp_path):
    out = tmp_path / 'dumped.py'
    proc = check_ok(run_tool(['python', 'tools/print_config.py', TINY_SEG,
                              '--cfg-options', 'train_cfg.max_iters=7',
                              '--save-path', str(out)]))
    assert "default_scope = 'mmseg'" in proc.stdout  # from _base_
    assert 'max_iters=7' in proc.stdout
    assert out.exists()


def test_analyze_logs_plots_training_curves(tiny_ade_root, tmp_path):
    work = str(tmp_path / 'work')
    check_ok(run_tool([
        'python', 'tools/train.py', TINY_SEG, '--work-dir', work,
        '--cfg-options', f'train_dataloader.dataset.data_root={tiny_ade_root}',
        f'val_dataloader.dataset.data_root={tiny_ade_root}'
    ]))
    scalars = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    assert scalars
    png = str(tmp_path / 'curves.png')
    check_ok(run_tool(['python', 'tools/analyze_logs.py', 'plot_curve',
                       scalars[0], '--keys', 'loss', 'mIoU', '--out', png]))
    assert osp.getsize(png) > 1000
    proc = check_ok(run_tool(['python', 'tools/analyze_logs.py',
                              'cal_train_time', scalars[0]]))
    assert 's/iter' in proc.stdout
    proc = run_tool(['python', 'tools/analyze_logs.py', 'plot_curve',
                     scalars[0], '--keys', 'no_such_key', '--out', png])
    assert proc.returncode != 0 and 'no_such_key' in proc.stderr


def test_build_vocab_embeddings_file_replaces_text_encoder(tmp_path):
    tokenizer = build_tokenizer_dir(str(tmp_path / 'tok'))
    encoder = tiny_roberta_encoder_cfg(tokenizer)
    cfg = tmp_path / 'clf.py'
    cfg.write_text(f"""
default_scope = 'mmdet'
custom_imports = dict(imports=['icar_dense'])
model = dict(type='Foo', head=dict(text_classifier=dict(
    type='TextClassifier', in_channels=8, embed_dim=16,
    text_encoder={encoder!r}, vocabulary=['cat'], templates='imagenet80')))
""")
    vocab = tmp_path / 'classes.txt'
    vocab.write_text('cat: a small feline\ndog\ntraffic light\n')
    out = str(tmp_path / 'emb.pth')
    proc = check_ok(run_tool(['python', 'tools/build_vocab_embeddings.py',
                              str(cfg), str(vocab), out]))
    assert 'encoding 3 classes' in proc.stdout
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    from_file = MODELS.build(dict(type='TextClassifier', in_channels=8,
                                  embed_dim=16, embeddings=out)).eval()
    saved = torch.load(out, weights_only=True)
    assert saved['class_names'] == ['cat', 'dog', 'traffic light']
    assert len(saved['templates']) == 80
    x = torch.randn(4, 8)
    logits = from_file(x)
    assert logits.shape == (4, 3)
    expected = torch.nn.functional.normalize(from_file.visual_proj(x), dim=-1)
    expected = expected @ saved['embeddings'].t() / 0.05
    torch.testing.assert_close(logits, expected)
