"""A hook used by the multi-process test to prove every rank trained."""
import json
import os.path as osp

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankMarkerHook(Hook):

    def after_train(self, runner):
        with open(osp.join(runner.work_dir, f'rank{get_rank()}.json'),
                  'w') as f:
            json.dump(dict(rank=get_rank(), world_size=get_world_size(),
                           iter=runner.iter), f)
