"""mmaction2 1.2.0's VisualizationHook, made to work for 3D recognizers."""
import copy
import math
import os.path as osp

import numpy as np
from mmaction.engine.hooks import VisualizationHook
from mmaction.registry import HOOKS
from mmengine.dataset import Compose
from mmengine.dist import get_world_size
from mmengine.fileio import FileClient
from mmengine.structures import LabelData


def _is_decode(transform) -> bool:
    """Whether a built transform decodes frames (``DecordDecode``,
    ``OpenCVDecode``, ``PyAVDecode``, ``RawFrameDecode``, ...), itself or
    inside a wrapper such as ``SafeLoad``."""
    if type(transform).__name__.endswith('Decode'):
        return True
    return any(_is_decode(t) for t in getattr(transform, 'transforms', ()))


def decoding_steps(pipeline):
    """The transforms of ``pipeline`` up to the one that decodes frames
    (a :class:`Compose`), or ``None`` when it decodes none."""
    transforms = list(getattr(pipeline, 'transforms', pipeline or ()))
    for i, transform in enumerate(transforms):
        if _is_decode(transform):
            return Compose(transforms[:i + 1])
    return None


@HOOKS.register_module()
class VideoVisualizationHook(VisualizationHook):
    """mmaction2 1.2.0's ``VisualizationHook`` made to work:

    * the frames drawn are the video's own decoded frames at their original
      size (the first clip of the test sampling: the test pipeline re-run up
      to its decoding step), not the network's resized / cropped input; the
      network input is drawn only where the video cannot be read again
      (several processes, a dataset without ``get_data_info``);
    * 3D recognizers get inputs of shape (views, C, T, H, W): for the
      network-input fallback the first view (clip x crop) is drawn
      (upstream permutes the 5-d tensor: RuntimeError,
      open-mmlab/mmaction2#2697);
    * ``show`` is passed as ``show_frames``
      (``ActionVisualizer.add_datasample`` has no ``show`` argument:
      TypeError);
    * the ground truth and the top-1 prediction are drawn: ``ActionVisualizer``
      looks for ``gt_labels`` / ``pred_labels`` while 1.2.0's
      ``ActionDataSample`` stores ``gt_label`` / ``pred_score``;
    * a relative ``out_dir`` is taken relative to ``WORK_DIR/<timestamp>/``,
      as mmdet's ``test_out_dir`` (``tools/test.py --show-dir``): pictures
      go to ``<out_dir>/<video name>_0/frames_0/<frame>.png``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draw_args['show_frames'] = self.draw_args.pop('show', False)
        self._out_dir_arg = self.out_dir
        self._dataset = None
        self._decode = None
        self._batch_size = None

    def _prepare(self, runner, loop) -> None:
        if self._out_dir_arg is not None:
            self.out_dir = osp.join(runner.work_dir, runner.timestamp,
                                    self._out_dir_arg)
            self.file_client = FileClient.infer_client(uri=self.out_dir)
        loader = getattr(loop, 'dataloader', None)
        dataset = getattr(loader, 'dataset', None)
        self._batch_size = getattr(loader, 'batch_size', None)
        self._dataset, self._decode = None, None
        if (dataset is not None and get_world_size() == 1
                and hasattr(dataset, 'get_data_info')):
            self._decode = decoding_steps(getattr(dataset, 'pipeline', None))
            if self._decode is not None:
                self._dataset = dataset

    def before_test(self, runner) -> None:
        self._prepare(runner, runner.test_loop)

    def before_val(self, runner) -> None:
        self._prepare(runner, runner.val_loop)

    def source_frames(self, index):
        """``(frames (T, H, W, 3) RGB uint8, video name)`` of the first test
        clip of dataset sample ``index``, or ``(None, None)``."""
        if self._dataset is None:
            return None, None
        info = copy.deepcopy(self._dataset.get_data_info(index))
        results = self._decode(info)
        if not results or not results.get('imgs'):
            return None, None
        imgs = results['imgs']
        clip_len = int(results.get('clip_len') or len(imgs))
        frames = np.stack([np.asarray(f) for f in imgs[:clip_len]])
        source = info.get('filename') or info.get('frame_dir') or str(index)
        return frames.astype(np.uint8), osp.basename(str(source))

    @staticmethod
    def _with_label_fields(sample):
        sample = sample.clone()
        if 'gt_label' in sample:
            sample.set_field(sample.gt_label, 'gt_labels')
        if 'pred_score' in sample:
            score = sample.pred_score
            sample.set_field(
                LabelData(item=score.argmax().view(1), score=score),
                'pred_labels')
        return sample

    def _draw_samples(self, batch_idx, data_batch, data_samples, step=0):
        if self.enable is False:
            return
        batch_size = self._batch_size or len(data_samples)
        start = batch_size * batch_idx
        end = start + len(data_samples)
        # the first index divisible by the interval, from the start index
        first = math.ceil(start / self.interval) * self.interval
        for sample_id in range(first, end, self.interval):
            i = sample_id - start
            frames, name = self.source_frames(sample_id)
            if frames is None:
                video = data_batch['inputs'][i]
                video = video[0] if video.dim() == 5 else video  # (C,T,H,W)
                frames = video.permute(1, 2, 3, 0).numpy().astype('uint8')
                sample = data_samples[i]
                name = (osp.basename(sample.get('filename'))
                        if 'filename' in sample else str(sample_id))
            draw_args = dict(self.draw_args)
            if self.out_dir is not None:
                draw_args['out_path'] = self.file_client.join_path(
                    self.out_dir, f'{name}_{step}')
            self._visualizer.add_datasample(
                name,
                video=frames,
                data_sample=self._with_label_fields(data_samples[i]),
                step=step,
                **draw_args)
