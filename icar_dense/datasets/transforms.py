"""Loading that fails clearly on a corrupt file, or skips it when asked.

``SafeLoad`` wraps the loading transforms of any mmdet / mmseg / mmaction2
pipeline (it is registered in mmengine's root ``TRANSFORMS``, which the three
libraries' registries inherit from)::

    train_pipeline = [
        dict(type='SafeLoad', transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', reduce_zero_label=True)]),
        ...]
    # video
    dict(type='SafeLoad', transforms=[
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=8, frame_interval=8, num_clips=1),
        dict(type='DecordDecode')])

Policy:

* by default a file that cannot be read or decoded raises
  :class:`DataLoadError` naming the file, the transform and the cause
  (mmcv / decord often say only ``failed to load image`` or
  ``Error reading 6393 bytes``);
* with ``skip_corrupt=True`` the transform returns ``None`` instead, which
  makes mmengine's ``BaseDataset`` (training datasets, ``test_mode=False``)
  draw another sample; every skip is logged as a warning with the file and
  the number of samples skipped so far by this process (each dataloader
  worker is a process).  Test datasets cannot skip (mmengine refuses
  ``None`` in test mode, since metrics need every sample), so keep the
  default there;
* a video with fewer frames than the sampled clip (``clip_len x
  frame_interval``) is looped by mmaction2's samplers; ``short_video=
  'loop'`` (default) keeps that and logs the file once, ``'error'`` raises
  :class:`DataLoadError`, ``'skip'`` treats the video like a corrupt one.
"""
from typing import List, Optional, Sequence

from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS

__all__ = ['DataLoadError', 'SafeLoad', 'skipped_samples']

# keys naming the files a sample is read from, the primary one first
_PATH_KEYS = ('img_path', 'filename', 'frame_dir', 'audio_path',
              'seg_map_path')
_SHORT_VIDEO_POLICIES = ('loop', 'error', 'skip')


class DataLoadError(RuntimeError):
    """A sample file that cannot be loaded; ``path`` names it."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


_skipped = {'count': 0}


def skipped_samples() -> int:
    """Samples skipped by ``SafeLoad(skip_corrupt=True)`` in this process."""
    return _skipped['count']


def _sample_paths(results: dict) -> List[tuple]:
    return [(k, results[k]) for k in _PATH_KEYS
            if isinstance(results.get(k), str) and results[k]]


def _culprit(results: dict, transform, err: BaseException) -> Optional[str]:
    """The file a failing loading transform was reading."""
    paths = _sample_paths(results)
    text = str(err)
    for _, path in paths:
        if path in text:
            return path
    if 'annotation' in type(transform).__name__.lower():
        for key, path in paths:
            if key == 'seg_map_path':
                return path
    return paths[0][1] if paths else None


@TRANSFORMS.register_module()
class SafeLoad(BaseTransform):
    """Run loading transforms; a failure names the file or skips the sample.

    Args:
        transforms (Sequence[dict | callable]): The loading transforms, built
            in the pipeline's registry scope (``LoadImageFromFile``,
            ``LoadAnnotations``, ``DecordInit``/``SampleFrames``/
            ``DecordDecode``, ...).
        skip_corrupt (bool): Return ``None`` (mmengine then draws another
            training sample) instead of raising. Defaults to False.
        short_video (str): ``'loop'``, ``'error'`` or ``'skip'`` for a video
            with fewer frames than ``clip_len x frame_interval``. Defaults to
            ``'loop'`` (mmaction2's behaviour).
    """

    def __init__(self,
                 transforms: Sequence,
                 skip_corrupt: bool = False,
                 short_video: str = 'loop') -> None:
        from mmcv.transforms import Compose
        if isinstance(transforms, dict) or not transforms:
            raise ValueError('SafeLoad: transforms must be a non-empty list '
                             f'of transform configs, got {transforms!r}')
        if short_video not in _SHORT_VIDEO_POLICIES:
            raise ValueError(f'SafeLoad: short_video must be one of '
                             f'{_SHORT_VIDEO_POLICIES}, got {short_video!r}')
        self.transforms = Compose(list(transforms)).transforms
        self.skip_corrupt = skip_corrupt
        self.short_video = short_video
        self._warned_short = set()

    def _fail(self, results: dict, message: str, path: Optional[str],
              cause: Optional[BaseException] = None):
        if self.skip_corrupt:
            _skipped['count'] += 1
            print_log(
                f'SafeLoad: skipped {path or "a sample"}: {message} '
                f'({_skipped["count"]} sample(s) skipped so far in this '
                'process)',
                logger='current', level=30)
            return None
        raise DataLoadError(message, path) from cause

    def _check_frames(self, results: dict):
        """Errors for a video without frames or shorter than its clip."""
        total = results.get('total_frames')
        if total is None:
            return results
        path = _culprit(results, None, RuntimeError(''))
        if total <= 0:
            return self._fail(results, f'cannot load {path!r}: the video '
                              'has no decodable frames', path)
        clip_len = results.get('clip_len')
        if not clip_len or 'frame_inds' not in results:
            return results
        interval = results.get('frame_interval') or 1
        needed = int(clip_len) * int(interval)
        if total >= needed:
            return results
        message = (f'{path!r} has {total} frames, fewer than the sampled '
                   f'clip of clip_len={clip_len} x frame_interval={interval}'
                   f' = {needed} frames')
        if self.short_video == 'error':
            raise DataLoadError(
                message + "; the samplers can loop it: SafeLoad("
                "short_video='loop')", path)
        if self.short_video == 'skip':
            return self._fail(results, message, path)
        if path not in self._warned_short:
            self._warned_short.add(path)
            print_log(f'SafeLoad: {message}; its frames are repeated',
                      logger='current', level=30)
        return results

    def transform(self, results: dict) -> Optional[dict]:
        for t in self.transforms:
            before = dict(results)
            try:
                out = t(results)
            except DataLoadError:
                raise
            except Exception as err:  # noqa: BLE001 - re-raised with context
                path = _culprit(before, t, err)
                where = f'{path!r}' if path else 'a sample'
                reason = str(err).strip() or type(err).__name__
                return self._fail(
                    before, f'cannot load {where} ({type(t).__name__}): '
                    f'{type(err).__name__}: {reason}', path, err)
            if out is None:  # the wrapped transform gave up on the sample
                path = _culprit(before, t, RuntimeError(''))
                return self._fail(
                    before, f'cannot load {path!r}: {type(t).__name__} '
                    'returned no data', path)
            results = out
            if 'total_frames' in results:
                checked = self._check_frames(results)
                if checked is None:
                    return None
        return results

    def __repr__(self) -> str:
        inner = ', '.join(type(t).__name__ for t in self.transforms)
        return (f'{type(self).__name__}(transforms=[{inner}], '
                f'skip_corrupt={self.skip_corrupt}, '
                f'short_video={self.short_video!r})')
