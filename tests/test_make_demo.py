"""`make demo` (README's second command): tools/demo_lvis.py end to end,
shortened to 2 training iterations in one process."""
import json
import os.path as osp

from conftest import check_ok, free_port, run_tool


def test_demo_lvis_end_to_end(tmp_path):
    work = tmp_path / 'demo'
    proc = check_ok(run_tool(
        ['python', 'tools/demo_lvis.py', '--work-dir', str(work), '--iters',
         '2', '--procs', '1', '--port', free_port()], timeout=480))
    assert '[4/4]' in proc.stdout and 'make demo: done' in proc.stdout
    with open(work / 'demo_results.json') as f:
        results = json.load(f)
    assert results['checkpoint'] == str(work / 'train' / 'iter_2.pth')
    for key in ('lvis/bbox_AP', 'lvis/bbox_APr', 'lvis/segm_APr'):
        assert 0 <= results['metrics'][key] <= 1, key
    assert set(results['group_ap']) == {
        'bbox_AP_base', 'bbox_AP_novel', 'segm_AP_base', 'segm_AP_novel'}
    # one prediction picture per photo, and the open-vocabulary demo
    assert len(results['pictures']) == 6
    assert all(osp.getsize(p) > 0 for p in results['pictures'])
    assert osp.getsize(work / 'demo_open_vocabulary.jpg') > 0
