"""docs/getting_started.md, section 0: the three first runs, as written.

Each ```bash block of the section is run line by line as the page shows it
(``python`` is this interpreter), from a scratch folder linking the
repository's ``configs/``, ``tools/``, ``demo/`` and ``tests/`` (the
tiny-data tool reads tests/data_factory.py), then the files the page says
each run writes are checked.  One substitution keeps the detection run short:
``tools/demo_lvis.py`` (``make demo``, 250 iterations with 2 processes,
masks from 5 GrabCut iterations) runs 2 iterations in one process with masks
from one GrabCut iteration, and the following command reads ``iter_2.pth``
instead of ``iter_250.pth``; the segmentation and video runs are run exactly
as documented.
"""
import glob
import json
import os
import os.path as osp
import re
import shlex
import sys

import cv2
import pytest

from conftest import REPO, free_port, run_tool

PAGE = osp.join(REPO, 'docs', 'getting_started.md')
LINKED = ('configs', 'tools', 'demo', 'tests')


def section_blocks():
    with open(PAGE, encoding='utf-8') as f:
        text = f.read()
    start = text.index('## 0. A first run on tiny data')
    end = text.index('\n## ', start + 1)
    return re.findall(r'```bash\n(.*?)```', text[start:end], flags=re.S)


def block_with(word):
    blocks = [b for b in section_blocks() if word in b]
    assert len(blocks) == 1, (word, blocks)
    return [line for line in blocks[0].splitlines()
            if line.strip() and not line.startswith('#')]


@pytest.fixture
def sandbox(tmp_path):
    for name in LINKED:
        os.symlink(osp.join(REPO, name), tmp_path / name)
    return tmp_path


def run_lines(lines, cwd, edit=lambda args: args, timeout=600):
    for line in lines:
        args = shlex.split(line)
        assert args[0] == 'python' and args[1].startswith('tools/'), line
        args = edit([sys.executable] + args[1:])
        proc = run_tool(args, cwd=str(cwd), timeout=timeout)
        assert proc.returncode == 0, (
            f'{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')


def only(pattern):
    found = glob.glob(str(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_detection_first_run(sandbox):
    lines = block_with('demo_lvis.py')
    assert len(lines) == 2

    def edit(args):
        if args[1] == 'tools/demo_lvis.py':
            return args + ['--iters', '2', '--procs', '1', '--port',
                           free_port(), '--grabcut-iters', '1']
        return [a.replace('iter_250.pth', 'iter_2.pth') for a in args]

    run_lines(lines, sandbox, edit)
    work = sandbox / 'work_dirs' / 'demo_lvis'
    assert (work / 'train' / 'iter_2.pth').is_file()
    pictures = glob.glob(str(work / 'test_tta' / '*' / 'pictures' / '*.jpg'))
    photos = glob.glob(str(work / 'data' / '*' / '*.jpg'))
    assert pictures and len(pictures) == len(
        glob.glob(str(work / 'test' / '*' / 'pictures' / '*.jpg')))
    assert all(cv2.imread(p) is not None for p in pictures), photos
    assert (work / 'test_tta' / 'metrics_test.json').is_file()
    # what `make demo` (the README's second command) reports
    with open(work / 'demo_results.json') as f:
        results = json.load(f)
    assert osp.samefile(results['checkpoint'], work / 'train' / 'iter_2.pth')
    for key in ('lvis/bbox_AP', 'lvis/bbox_APr', 'lvis/segm_APr'):
        assert 0 <= results['metrics'][key] <= 1, key
    assert set(results['group_ap']) == {
        'bbox_AP_base', 'bbox_AP_novel', 'segm_AP_base', 'segm_AP_novel'}
    # one prediction picture per photo, and the open-vocabulary demo
    assert len(results['pictures']) == 6
    assert all(osp.getsize(osp.join(sandbox, p)) > 0
               for p in results['pictures'])
    assert osp.getsize(work / 'demo_open_vocabulary.jpg') > 0


def test_segmentation_first_run(sandbox):
    lines = block_with('demo_ade_tiny.py')
    run_lines(lines, sandbox)
    work = sandbox / 'work_dirs' / 'demo_ade_tiny'
    assert (work / 'iter_40.pth').is_file()
    assert (work / 'metrics_val.jsonl').is_file()
    assert (work / 'test' / 'metrics_test.json').is_file()
    images = sorted(os.listdir(sandbox / 'data' / 'tiny_ade' / 'images' /
                               'validation'))
    # the --show-dir run (the --tta run wrote no pictures)
    vis = only(work / 'test' / '*' / 'vis')
    assert sorted(os.listdir(vis)) == images
    maps = sorted(os.listdir(work / 'label_maps'))
    assert maps == [osp.splitext(n)[0] + '.png' for n in images]
    label_map = cv2.imread(str(work / 'label_maps' / maps[0]),
                           cv2.IMREAD_UNCHANGED)
    # in the annotation files' numbering (ADE20K: 0 = other, classes 1..5;
    # mmseg adds back the label reduced at loading)
    assert label_map.ndim == 2 and 1 <= label_map.min() <= label_map.max() <= 5


def test_video_first_run(sandbox):
    lines = block_with('demo_videos_tiny.py')
    run_lines(lines, sandbox)
    work = sandbox / 'work_dirs' / 'demo_videos_tiny'
    assert (work / 'epoch_6.pth').is_file()
    assert (work / 'predictions.pkl').is_file()
    with open(sandbox / 'data' / 'tiny_videos' / 'val_list.txt') as f:
        videos = [line.split()[0] for line in f if line.strip()]
    vis = only(work / 'test' / '*' / 'vis')
    assert sorted(os.listdir(vis)) == sorted(f'{v}_0' for v in videos)
    frames = glob.glob(osp.join(vis, '*', 'frames_0', '*.png'))
    assert len(frames) == 4 * len(videos)  # clip_len 4
    picture = cv2.imread(str(work / 'demo.jpg'))
    assert picture is not None and picture.shape[0] > 240
