"""``tools/test.py --show-dir`` for segmentation, placed like mmdet's."""
import os.path as osp
from typing import Optional, Sequence

import mmcv
from mmengine.fileio import get
from mmengine.utils import mkdir_or_exist
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class SegShowDirHook(SegVisualizationHook):
    """mmseg's ``SegVisualizationHook`` with mmdet's ``test_out_dir``.

    mmseg's hook hands the test pictures to the visualizer's backends (under
    the visualizer's ``save_dir``, i.e. the current folder with mmseg's
    ``tools/test.py --show-dir``).  In testing this hook writes each picture
    (ground truth and prediction side by side) to
    ``WORK_DIR/<timestamp>/<test_out_dir>/<image name>``, as mmdet's
    ``DetVisualizationHook`` does (an absolute ``test_out_dir`` is used as
    it is), every ``interval``-th test image.  Validation is unchanged.

    Args:
        test_out_dir (str, optional): Folder of the test pictures.
        **kwargs: ``SegVisualizationHook`` arguments (``draw``,
            ``interval``, ``show``, ``wait_time``, ``backend_args``).
    """

    def __init__(self, *args, test_out_dir: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_out_dir = test_out_dir
        self._out_dir = None
        self._test_index = 0

    def before_test(self, runner) -> None:
        self._test_index = 0
        if self.test_out_dir is not None:
            self._out_dir = osp.join(runner.work_dir, runner.timestamp,
                                     self.test_out_dir)
            mkdir_or_exist(self._out_dir)

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        if self.draw is False:
            return
        for output in outputs:
            self._test_index += 1
            if (self._test_index - 1) % self.interval:
                continue
            img_path = output.img_path
            img = mmcv.imfrombytes(
                get(img_path, backend_args=getattr(self, 'backend_args',
                                                   None)),
                channel_order='rgb')
            name = osp.basename(img_path)
            out_file = (osp.join(self._out_dir, name)
                        if self._out_dir is not None else None)
            self._visualizer.add_datasample(
                f'test_{name}',
                img,
                data_sample=output,
                show=self.show,
                wait_time=self.wait_time,
                out_file=out_file,
                step=self._test_index)
