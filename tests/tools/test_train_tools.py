"""tools/train.py, tools/test.py and tools/dist_train.sh on the CPU."""
import itertools
import json
import os.path as osp

import torch

import icar_dense  # noqa: F401  (allow-lists mmengine checkpoint types)

from conftest import check_ok, free_port, run_dist_tool, run_tool

CONFIG = 'tests/configs/tiny_seg_fcn.py'


def _data_options(root):
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}']


def test_train_then_resume_then_test(tiny_ade_root, tmp_path):
    work = str(tmp_path / 'work')
    check_ok(run_tool(['python', 'tools/train.py', CONFIG, '--work-dir', work,
                       '--cfg-options', *_data_options(tiny_ade_root)]))
    ckpt = osp.join(work, 'iter_4.pth')
    assert osp.exists(ckpt)
    # torch's safe loader accepts mmengine's checkpoint (allow-listed types)
    state = torch.load(ckpt, weights_only=True)
    assert state['meta']['iter'] == 4

    resumed = check_ok(run_tool(
        ['python', 'tools/train.py', CONFIG, '--work-dir', work, '--resume',
         '--cfg-options', 'train_cfg.max_iters=6',
         *_data_options(tiny_ade_root)]))
    log = resumed.stdout + resumed.stderr
    assert 'resumed' in log.lower() and 'iter_4.pth' in log
    assert osp.exists(osp.join(work, 'iter_6.pth'))
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [1/6]' not in log
    # validation numbers saved to the work dir as JSON
    with open(osp.join(work, 'metrics_val.jsonl')) as f:
        records = [json.loads(line) for line in f]
    assert [r['iter'] for r in records] == [4, 6]
    assert 'mIoU' in records[-1]

    test_work = str(tmp_path / 'test')
    check_ok(run_tool(['python', 'tools/test.py', CONFIG,
                       osp.join(work, 'iter_6.pth'), '--work-dir', test_work,
                       '--cfg-options', *_data_options(tiny_ade_root)]))
    with open(osp.join(test_work, 'metrics_test.json')) as f:
        metrics = json.load(f)['metrics']
    assert metrics['mIoU'] == records[-1]['mIoU']


def test_dist_train_two_cpu_processes(tiny_ade_root, tmp_path):
    work = str(tmp_path / 'dist')
    run_dist_tool(
        ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', work,
         '--cfg-options', 'env_cfg.dist_cfg.backend=gloo',
         'custom_imports.imports=[icar_dense,helpers_rank_marker]',
         'custom_hooks.0.type=RankMarkerHook',
         *_data_options(tiny_ade_root)],
        env=dict(PORT=free_port(), PYTHONPATH='tests'))
    for rank in (0, 1):
        with open(osp.join(work, f'rank{rank}.json')) as f:
            marker = json.load(f)
        assert marker == dict(rank=rank, world_size=2, iter=4)
    checkpoint = osp.join(work, 'iter_4.pth')
    assert osp.isfile(checkpoint)
    run_dist_tool(
        ['bash', 'tools/dist_test.sh', CONFIG, checkpoint, '2',
         '--work-dir', work, '--cfg-options', 'env_cfg.dist_cfg.backend=gloo',
         'custom_imports.imports=[icar_dense,helpers_rank_marker]',
         'custom_hooks.0.type=RankMarkerHook', 'custom_hooks.0.tag=test',
         *_data_options(tiny_ade_root)],
        env=dict(PORT=free_port(), PYTHONPATH='tests'))
    # The process group's threads, alive at the end of each run, were
    # joined before Python shut down (the tools destroy the group): a gloo
    # thread taking the GIL during shutdown aborts a process whose work is
    # done (SIGABRT, about 1 two-rank run in 25 on a loaded 2-core machine)
    for tag, rank in itertools.product(('train', 'test'), (0, 1)):
        with open(osp.join(work, f'rank{rank}_{tag}_threads.json')) as f:
            threads = json.load(f)
        assert 'pt_gloo_runloop' in threads['end_of_run'], threads
        assert not [t for t in threads['at_exit'] if 'gloo' in t], threads


def test_slurm_scripts_pass_arguments_whole(tmp_path):
    """A stand-in ``srun`` records what slurm_train.sh / slurm_test.sh ask
    for: extra arguments with spaces stay whole, a job smaller than a node
    asks for only the GPUs it uses."""
    srun = tmp_path / 'srun'
    srun.write_text('#!/usr/bin/env python3\nimport json, sys\n'
                    'print(json.dumps(sys.argv[1:]))\n')
    srun.chmod(0o755)
    env = dict(PATH=f'{tmp_path}:/usr/bin:/bin', GPUS='2', GPUS_PER_NODE='8')
    option = 'model.test_cfg.crop_size=[1, 2]'
    for script, fourth in (('tools/slurm_train.sh', 'work'),
                           ('tools/slurm_test.sh', 'ckpt.pth')):
        proc = check_ok(run_tool(
            ['bash', script, 'gpu', 'job', CONFIG, fourth, '--cfg-options',
             option], env=env))
        argv = json.loads(proc.stdout.strip().splitlines()[-1])
        assert argv[-2:] == ['--cfg-options', option]
        assert '--ntasks=2' in argv and '--ntasks-per-node=2' in argv
        assert '--gres=gpu:2' in argv

        short = run_tool(['bash', script, 'gpu', 'job'], env=env)
        assert short.returncode == 2 and 'usage:' in short.stderr
    short = run_tool(['bash', 'tools/dist_test.sh', CONFIG, '2'])
    assert short.returncode == 2 and 'CHECKPOINT NUM_PROCS' in short.stderr


def test_test_tool_checks_the_checkpoint_before_building(tmp_path):
    missing = str(tmp_path / 'no_such.pth')
    proc = run_tool(['python', 'tools/test.py', CONFIG, missing,
                     '--work-dir', str(tmp_path / 'work')])
    assert proc.returncode != 0
    assert f'checkpoint file not found: {missing!r}' in proc.stderr
    # it stopped before mmengine built the model
    assert 'Hooks will be executed' not in proc.stdout + proc.stderr
