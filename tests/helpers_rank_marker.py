"""A hook for the multi-process tests: every rank trained, and the process
group was gone before the interpreter shut down."""
import atexit
import json
import os
import os.path as osp

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def thread_names():
    """The names of this process' threads (Linux); torch names gloo's
    ``pt_gloo_runloop`` and ``gloo_tcp_loop``."""
    names = []
    for tid in os.listdir('/proc/self/task'):
        with open(f'/proc/self/task/{tid}/comm') as f:
            names.append(f.read().strip())
    return sorted(names)


@HOOKS.register_module()
class RankMarkerHook(Hook):
    """Writes ``rank{r}.json`` after training, and ``rank{r}_{tag}_threads
    .json``: the threads alive at the end of the run, and those alive after
    the tool's ``main()`` returned, before Python finalizes (a gloo thread
    still alive then can abort the process)."""

    def __init__(self, tag='train'):
        self.tag = tag

    def after_train(self, runner):
        with open(osp.join(runner.work_dir, f'rank{get_rank()}.json'),
                  'w') as f:
            json.dump(dict(rank=get_rank(), world_size=get_world_size(),
                           iter=runner.iter), f)

    def after_run(self, runner):
        record = dict(end_of_run=thread_names())
        path = osp.join(runner.work_dir,
                        f'rank{get_rank()}_{self.tag}_threads.json')

        def write_at_exit():
            record['at_exit'] = thread_names()
            with open(path, 'w') as f:
                json.dump(record, f)

        atexit.register(write_at_exit)
