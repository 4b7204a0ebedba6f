"""The flags of mmdet / mmseg / mmaction2's ``tools/test.py`` and
``tools/train.py``, typed as a user types them (issue 16, items 3 and 8).

* every flag of the host libraries' tools (read from the installed
  ``mmdet`` / ``mmseg`` / ``mmaction`` ``.mim/tools``) is accepted by ours;
* what each flag changes in the config the tool runs (``ICAR_DRY_RUN=1``
  with ``ICAR_DRY_RUN_DUMP``: the tool stops right before building the
  runner and writes the resolved config);
* flags whose meaning differs, abbreviations, and ``--show`` without a
  display are refused with a message naming the alternative;
* ``--help`` and argument errors of every tool come before any heavy import;
  ``import icar_dense`` imports no host library, a registry of a task's
  scope imports that task's modules when it is searched.

The real runs behind the flags are in tests/tools/test_show_dir.py
(pictures), tests/engine/test_faults_and_locks.py (``--out``) and
tests/tools/test_train_tools.py.
"""
import ast
import glob
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, tool_env
from test_action_pipeline import action_data  # noqa: F401 (fixture)

SITE = osp.dirname(osp.dirname(osp.abspath(__import__('mmengine').__file__)))
HOSTS = ('mmdet', 'mmseg', 'mmaction')
DET = 'configs/det/icar_swint_coco_ov.py'
SEG = 'configs/seg/icar_swint_upernet_ade20k_160k.py'
ACTION = 'configs/action/icar_swint_k400_zeroshot.py'
HEAVY = ('torch', 'mmdet', 'mmseg', 'mmaction', 'mmcv', 'transformers',
         'icar_dense')


def host_flags(tool):
    """Option strings of ``tools/<tool>.py`` of the installed hosts."""
    flags = {}
    for host in HOSTS:
        path = osp.join(SITE, host, '.mim', 'tools', f'{tool}.py')
        if not osp.isfile(path):
            continue
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(
                    node.func, 'attr', '') == 'add_argument':
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and \
                            str(arg.value).startswith('--'):
                        flags.setdefault(arg.value, []).append(host)
    return flags


def run(args, env=None, timeout=300):
    return subprocess.run([sys.executable] + list(args), cwd=REPO,
                          env=tool_env(env), capture_output=True, text=True,
                          timeout=timeout)


def dry_run(tool, args, tmp_path, env=None):
    """``tools/<tool>.py ARGS`` up to the runner; the config it would run."""
    from mmengine.config import Config
    resolved = tmp_path / f'resolved_{tool}.py'
    proc = run([f'tools/{tool}.py'] + [str(a) for a in args],
               env=dict(env or {}, ICAR_DRY_RUN='1',
                        ICAR_DRY_RUN_DUMP=str(resolved)))
    assert proc.returncode == 0 and '[dry-run]' in proc.stdout, (
        proc.stdout[-2000:] + proc.stderr[-3000:])
    return Config.fromfile(str(resolved))


def refused(tool, args, env=None):
    proc = run([f'tools/{tool}.py'] + [str(a) for a in args], env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    return proc.stderr


# ---------------------------------------------------------------------------
# every host flag exists
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('tool', ['test', 'train'])
def test_every_host_flag_is_accepted(tool):
    flags = host_flags(tool)
    # the three hosts are installed (requirements/): their flags are known
    assert {'--work-dir', '--cfg-options', '--launcher'} <= set(flags), flags
    proc = run([f'tools/{tool}.py', '--help'])
    assert proc.returncode == 0, proc.stderr
    missing = sorted(f for f in flags if f not in proc.stdout)
    assert not missing, f'tools/{tool}.py lacks host flags {missing}'
    print(f'tools/{tool}.py accepts', {f: h for f, h in sorted(flags.items())})


# ---------------------------------------------------------------------------
# what the flags do (dry runs of the public configs)
# ---------------------------------------------------------------------------
def _hook(cfg):
    return cfg.default_hooks.visualization


def _first_metric(cfg):
    evaluator = cfg.test_evaluator
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator = evaluator['metrics']
    return evaluator[0] if isinstance(evaluator, (list, tuple)) else evaluator


def test_detection_test_flags(tmp_path):
    """mmdet's --tta (flip + 3 scales, masks kept), --show/--wait-time,
    --show-dir, mmaction2's --dump and --interval, on a detection config."""
    cfg = dry_run('test', [
        DET, 'ckpt.pth', '--tta', '--show', '--wait-time', '0.5',
        '--show-dir', 'vis', '--interval', '3', '--dump', 'preds.pkl'
    ], tmp_path, env=dict(DISPLAY=':0'))
    assert cfg.model.type == 'OVDetTTAModel'
    assert cfg.model.module.type == 'MaskRCNN'
    assert cfg.model.module.roi_head.bbox_head.type == \
        'OVShared4Conv1FCBBoxHead'
    (load, tta) = cfg.test_dataloader.dataset.pipeline
    assert tta.type == 'TestTimeAug'
    scales, flips = tta.transforms[:2]
    assert len({tuple(t.scale) for t in scales}) == 3
    assert sorted(t.prob for t in flips) == [0.0, 1.0]
    assert {'flip', 'flip_direction'} <= set(tta.transforms[-1][0].meta_keys)
    hook = _hook(cfg)
    assert (hook.type, hook.draw, hook.test_out_dir, hook.interval,
            hook.show, hook.wait_time) == ('DetVisualizationHook', True,
                                           'vis', 3, True, 0.5)
    dump = _first_metric(cfg)
    assert (dump.type, dump.out_file_path) == ('DumpDetResults', 'preds.pkl')


def test_segmentation_test_flags(tmp_path):
    """--show-dir lands like mmdet's; mmseg's --out DIR is --out-dir here;
    --out FILE.pkl pickles the predictions; --tta is mmseg's."""
    cfg = dry_run('test', [
        SEG, 'ckpt.pth', '--show-dir', 'vis', '--out-dir', 'maps', '--out',
        'preds.pkl', '--tta'
    ], tmp_path)
    hook = _hook(cfg)
    assert (hook.type, hook.draw, hook.test_out_dir,
            hook.interval) == ('SegShowDirHook', True, 'vis', 1)
    assert 'show' not in hook
    assert cfg.model.type == 'SegTTAModel'
    metrics = cfg.test_evaluator
    metrics = metrics if isinstance(metrics, list) else [metrics]
    assert metrics[0].type == 'DumpResults'
    iou = [m for m in metrics if 'IoUMetric' in m.type]
    assert iou and all(m.output_dir == 'maps' for m in iou)


def test_action_test_flags(tmp_path):
    """mmaction2's --dump / --show-dir / --interval on an action config."""
    cfg = dry_run('test', [
        ACTION, 'ckpt.pth', '--dump', 'preds.pkl', '--show-dir', 'vis',
        '--interval', '2'
    ], tmp_path)
    hook = _hook(cfg)
    assert (hook.type, hook.enable, hook.out_dir,
            hook.interval) == ('VideoVisualizationHook', True, 'vis', 2)
    assert _first_metric(cfg).type == 'DumpResults'


def test_train_flags(tmp_path):
    """mmdet's --amp / --auto-scale-lr / --resume CKPT and mmaction2's
    --no-validate / --seed / --diff-rank-seed / --deterministic."""
    cfg = dry_run('train', [
        DET, '--amp', '--auto-scale-lr', '--resume', 'epoch_3.pth',
        '--no-validate', '--seed', '7', '--diff-rank-seed',
        '--deterministic'
    ], tmp_path)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.auto_scale_lr.enable is True
    assert cfg.resume is True and cfg.load_from == 'epoch_3.pth'
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    assert cfg.val_evaluator is None
    assert dict(cfg.randomness) == dict(seed=7, diff_rank_seed=True,
                                        deterministic=True)
    # mmseg's bare --resume (the latest checkpoint of the work dir)
    cfg = dry_run('train', [SEG, '--resume'], tmp_path)
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.val_cfg is not None and 'randomness' not in cfg


# ---------------------------------------------------------------------------
# refusals name the alternative
# ---------------------------------------------------------------------------
def test_refusals_name_the_alternative(tmp_path):
    # no abbreviations: --show is not --show-dir, --sho is nothing
    err = refused('test', [DET, 'ckpt.pth', '--sho'])
    assert 'unrecognized arguments: --sho' in err
    err = refused('train', [DET, '--no-val'])
    assert 'unrecognized arguments: --no-val' in err
    # --show on a machine without a display
    err = refused('test', [DET, 'ckpt.pth', '--show'],
                  env=dict(DISPLAY='', WAYLAND_DISPLAY=''))
    assert 'no display' in err and '--show-dir' in err
    # mmseg's --out DIR
    err = refused('test', [SEG, 'ckpt.pth', '--out', 'work_dirs/maps'])
    assert '--out-dir work_dirs/maps' in err and '.pkl' in err
    err = refused('test', [SEG, 'ckpt.pth', '--show-dir', 'v', '--interval',
                           '0'])
    assert '--interval must be >= 1' in err
    # --out-dir is segmentation's
    proc = run(['tools/test.py', DET, 'ckpt.pth', '--out-dir', 'maps'],
               env=dict(ICAR_DRY_RUN='1'))
    assert proc.returncode != 0
    assert '--out-dir writes segmentation label maps' in proc.stderr
    assert '--out FILE.pkl' in proc.stderr


# ---------------------------------------------------------------------------
# start-up (item 8)
# ---------------------------------------------------------------------------
def test_help_and_argument_errors_import_nothing_heavy():
    """Every tool parses its arguments before importing torch, OpenMMLab
    or icar_dense: ``--help`` and a wrong argument answer at once."""
    tools = sorted(
        osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'tools',
                                                         '*.py')))
    code = textwrap.dedent('''
        import runpy, sys
        heavy = %r
        for tool, argv in %r:
            sys.argv = [tool] + argv
            try:
                runpy.run_path(tool, run_name='__main__')
            except SystemExit as exc:
                code = exc.code
            else:
                code = 'returned'
            loaded = [m for m in heavy if m in sys.modules]
            print('RESULT', tool, argv, code, loaded)
    ''') % (HEAVY, [(t, a) for t in tools for a in (['--help'], )] + [
        ('tools/test.py', ['only_a_config.py']),
        ('tools/train.py', ['a.py', '--amp=1']),
        ('tools/demo.py', ['in.jpg', 'a.py']),
    ])
    proc = run(['-c', code])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [line.split(' ', 1)[1] for line in proc.stdout.splitlines()
               if line.startswith('RESULT ')]
    assert len(results) == len(tools) + 3, proc.stdout[-3000:]
    for line in results:
        assert line.endswith(' []'), f'imported before parsing: {line}'
        assert (" ['--help'] 0 " in line
                or ' 2 [' in line), f'unexpected exit: {line}'


def test_import_icar_dense_imports_a_task_when_its_registry_is_used():
    code = textwrap.dedent('''
        import sys
        import icar_dense
        hosts = ('mmdet', 'mmseg', 'mmaction')
        print('after import:', [m for m in hosts if m in sys.modules])
        from mmseg.registry import MODELS as SEG
        assert SEG.get('ICARUPerHead') is not None
        assert SEG.get('ICARSwinTransformer') is not None
        assert SEG.get('TextClassifier') is not None
        print('after an mmseg lookup:', 'icar_dense.seg' in sys.modules,
              'icar_dense.det' in sys.modules, 'mmaction' in sys.modules)
        from mmengine.registry import DATASETS, DefaultScope
        with DefaultScope.overwrite_default_scope('mmaction'):
            from mmaction.registry import DATASETS as ACTION
            assert ACTION.get('ZeroShotVideoDataset') is not None
        from mmdet.registry import MODELS as DET
        assert DET.get('OVShared4Conv1FCBBoxHead') is not None
        assert DET.get('OVDetTTAModel') is not None
        assert DET.get('TextClassifier') is SEG.get('TextClassifier')
        print('done')
    ''')
    proc = run(['-c', code])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'after import: []' in proc.stdout
    assert 'after an mmseg lookup: True False False' in proc.stdout
    assert 'done' in proc.stdout


# ---------------------------------------------------------------------------
# detection TTA merges boxes and keeps their masks
# ---------------------------------------------------------------------------
def test_det_tta_merges_flipped_views_and_keeps_masks():
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData

    import icar_dense  # noqa: F401
    from mmdet.registry import MODELS
    h, w = 20, 30

    def view(flip, boxes, scores, labels):
        sample = DetDataSample(metainfo=dict(
            ori_shape=(h, w), flip=flip,
            flip_direction='horizontal' if flip else None))
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            masks[i, int(y1):int(y2), int(x1):int(x2)] = True
        sample.pred_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            scores=torch.tensor(scores), labels=torch.tensor(labels),
            masks=masks)
        return sample

    class Detector(torch.nn.Module):  # stands for the wrapped detector

        def test_step(self, data):
            raise AssertionError('not called: the views are given')

    with DefaultScope.overwrite_default_scope('mmdet'):
        tta = MODELS.build(dict(
            type='OVDetTTAModel', module=Detector(),
            tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                         max_per_img=2)))
    # the same object seen plain (score 0.6) and flipped (0.9), plus one
    # other class; the flipped view's box is in flipped coordinates
    plain = view(False, [[2, 3, 10, 12], [15, 5, 25, 15]], [0.6, 0.5],
                 [1, 4])
    flipped = view(True, [[w - 10, 3, w - 2, 12]], [0.9], [1])
    merged = tta._merge_single_sample([plain, flipped])
    pred = merged.pred_instances
    assert pred.labels.tolist() == [1, 4]
    assert pred.scores.tolist() == pytest.approx([0.9, 0.5])
    # flipped back: the box and its mask are where the object is
    assert pred.bboxes[0].tolist() == pytest.approx([2, 3, 10, 12])
    assert pred.masks.shape == (2, h, w)
    assert torch.equal(pred.masks[0], plain.pred_instances.masks[0])
    assert torch.equal(pred.masks[1], plain.pred_instances.masks[1])
    # max_per_img, and no detection at all gives an empty data sample
    tta.tta_cfg['max_per_img'] = 1
    assert len(tta._merge_single_sample([plain, flipped]).pred_instances) \
        == 1
    empty = view(False, [], [], [])
    empty.pred_instances.bboxes = torch.zeros(0, 4)
    out = tta._merge_single_sample([empty, view(True, [], [], [])])
    assert isinstance(out, DetDataSample) and len(out.pred_instances) == 0


# ---------------------------------------------------------------------------
# what the user sees (item 7): InMaP progress bar, the video demo's picture
# ---------------------------------------------------------------------------
@pytest.fixture
def tiny_action(action_data, tmp_path):  # noqa: F811
    from test_examples import action_example
    cfg = action_example(action_data, tmp_path / 'w')
    config = str(tmp_path / 'action.py')
    cfg.dump(config)
    return config


def test_inmap_progress_bar_on_for_long_runs(tiny_action, action_data,
                                             tmp_path):
    base = ['tools/test.py', tiny_action, action_data['icar'], '--inmap']
    proc = run(base + ['--work-dir', str(tmp_path / 'long'), '--cfg-options',
                       'inmap.iters=250'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'InMaP proxy learning' in proc.stderr
    assert '250/250' in proc.stderr
    # short runs stay quiet (inmap.progress=True / False forces it)
    proc = run(base + ['--work-dir', str(tmp_path / 'short'),
                       '--cfg-options', 'inmap.iters=20'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'InMaP proxy learning' not in proc.stderr


def test_video_demo_writes_a_picture(tiny_action, action_data, tmp_path):
    import cv2
    video = osp.join(action_data['video_dir'], action_data['videos'][1])
    base = ['tools/demo.py', video, tiny_action, action_data['icar'],
            '--vocabulary', 'diving,biking,juggling balls,abseiling']
    out = str(tmp_path / 'demo.png')
    proc = run(base + ['--out-file', out, '--topk', '3'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    picture = cv2.imread(out)
    assert picture is not None, 'no picture written'
    capture = cv2.VideoCapture(video)
    ok, frame = capture.read()
    capture.release()
    # frames (240 px high) over a panel of 3 + 1 text lines
    assert picture.shape[0] > 240 and picture.shape[1] >= frame.shape[1]
    # the panel is white with dark text: the labels were drawn
    panel = picture[250:]
    assert (panel < 100).any() and (panel == 255).mean() > 0.5
    # no JSON in a .png, and an unknown suffix is refused before building
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    proc = run(base + ['--out-file', str(tmp_path / 'demo.gif')])
    assert proc.returncode != 0
    assert 'demo.gif' in proc.stderr and '.json' in proc.stderr
    assert 'picture' in proc.stderr
