"""print_config, analyze_logs and build_vocab_embeddings."""
import glob
import os.path as osp

import torch

import icar_dense  # noqa: F401
from conftest import REPO, check_ok, run_tool
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
    # no per-parameter "same before and after init_weights" report
    assert 'before and after' not in proc.stdout + proc.stderr
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


def _write_scalars(path, records):
    import json
    with open(path, 'w') as f:
        for rec in records:
            f.write(json.dumps(rec) + '\n')


def _epoch_based_log():
    """2 epochs of 4 iterations logged every 2, validated after each epoch
    (as mmengine writes them: val records hold the val loop's time and
    step = epoch)."""
    recs = []
    for epoch, times in ((1, [9.0, 0.5]), (2, [7.0, 0.25])):
        for k, t in enumerate(times):
            it = (epoch - 1) * 4 + 2 * (k + 1)
            recs.append(dict(lr=0.01, time=t, data_time=0.1, loss=1.0 / it,
                             epoch=epoch, iter=it, memory=10, step=it))
        recs.append({'coco/bbox_mAP': 0.1 * epoch, 'time': 100.0,
                     'data_time': 50.0, 'step': epoch})
    return recs


def test_analyze_logs_train_time_leaves_out_validation(tmp_path):
    log = str(tmp_path / 'scalars.json')
    _write_scalars(log, _epoch_based_log())
    proc = check_ok(run_tool(['python', 'tools/analyze_logs.py',
                              'cal_train_time', log]))
    # the first record of each epoch (9.0, 7.0) is warm-up; validation
    # records (100 s) are not training iterations
    assert 'average iter time: 0.3750 s/iter' in proc.stdout
    assert 'slowest epoch 1, average time is 0.5000' in proc.stdout
    proc = check_ok(run_tool(['python', 'tools/analyze_logs.py',
                              'cal_train_time', log, '--include-outliers']))
    assert 'average iter time: 4.1875 s/iter' in proc.stdout


def test_analyze_logs_places_validation_at_its_iteration(tmp_path):
    import runpy
    tool = runpy.run_path(osp.join(REPO, 'tools', 'analyze_logs.py'))
    records = _epoch_based_log()
    xs, ys = tool['series'](records, 'coco/bbox_mAP')
    # epoch 1 ends at iteration 4, epoch 2 at 8 (not at x = 1 and 2)
    assert xs.tolist() == [4, 8]
    assert ys.tolist() == [0.1, 0.2]
    xs, _ = tool['series'](records, 'loss')
    assert xs.tolist() == [2, 4, 6, 8]
    # an unknown key lists the keys the log has
    log = str(tmp_path / 'scalars.json')
    _write_scalars(log, records)
    proc = run_tool(['python', 'tools/analyze_logs.py', 'plot_curve', log,
                     '--keys', 'mIoU', '--out', str(tmp_path / 'c.png')])
    assert proc.returncode != 0
    assert "no ['mIoU']" in proc.stderr and 'coco/bbox_mAP' in proc.stderr
    assert 'loss' in proc.stderr
