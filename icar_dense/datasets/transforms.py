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
  :class:`DataLoadError`, ``'skip'`` treats the video like a corrupt one;
* a file that is empty (0 bytes) or missing is said so in the message.

``CheckSegMap`` (after ``LoadAnnotations``) refuses a segmentation map with
labels outside the classes or of another size than its image, naming the
map: stock mmseg would score such labels as nothing (or stretch the map).
"""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np

from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS

__all__ = ['DataLoadError', 'SafeLoad', 'CheckSegMap', 'skipped_samples']

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
    if transform is not None:
        # a loading transform names the file it read in its own key
        own = [p for k, p in paths
               if k == 'seg_map_path' and 'annotation' in type(
                   transform).__name__.lower()]
        broken = [p for _, p in paths if _file_problem(p)]
        if own and _file_problem(own[0]):
            return own[0]
        if broken and not any(p in text for _, p in paths):
            return broken[0]
    for _, path in paths:
        if path in text:
            return path
    if 'annotation' in type(transform).__name__.lower():
        for key, path in paths:
            if key == 'seg_map_path':
                return path
    return paths[0][1] if paths else None


def _file_problem(path: Optional[str]) -> Optional[str]:
    """Why a local file cannot hold data (missing, a folder, empty)."""
    if not path or '://' in path:
        return None
    if not osp.exists(path):
        return 'the file does not exist'
    if osp.isdir(path):
        return 'it is a folder, not a file'
    if osp.getsize(path) == 0:
        return 'the file is empty (0 bytes)'
    return None


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
                problem = _file_problem(path)
                problem = f'{problem}; ' if problem else ''
                return self._fail(
                    before, f'cannot load {where} ({type(t).__name__}): '
                    f'{problem}{type(err).__name__}: {reason}', path, err)
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


@TRANSFORMS.register_module()
class CheckSegMap(BaseTransform):
    """Refuse a segmentation map that cannot belong to its image.

    Put it right after ``LoadAnnotations`` (which applies
    ``reduce_zero_label`` and the dataset's ``label_map``).  It raises
    :class:`DataLoadError` naming the map when

    * a pixel label is neither a class (``0 .. num_classes - 1``) nor
      ``ignore_index``: mmseg's ``IoUMetric`` would count such pixels as
      nothing and the loss fails without naming the file;
    * the map is not the size of its image (``ori_shape``, the image as
      loaded): resizing would stretch it over the wrong pixels, and at test
      time the metric fails with a shape error.

    The check is a ``max`` over the map (plus a histogram when ``ignore``
    pixels are present): far cheaper than decoding it.

    Args:
        num_classes (int, optional): Classes of the label space after
            ``LoadAnnotations``.  For a class subset of ADE20K
            (``metainfo.classes``) ADE's 150 stays right: mmseg's
            ``label_map`` sends the other classes to 255.  None: taken from
            ``results['num_classes']`` when the dataset provides it, else
            only the size is checked (said once).
        ignore_index (int): Label of unlabelled pixels. Defaults to 255.
        check_size (bool): Compare the map's size with the image's.
            Defaults to True.
    """

    def __init__(self, num_classes: Optional[int] = None,
                 ignore_index: int = 255, check_size: bool = True) -> None:
        if num_classes is not None and (not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError('CheckSegMap: num_classes must be a positive '
                             f'integer or None, got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.check_size = check_size
        self._warned = False

    def _labels_outside(self, seg: np.ndarray, num_classes: int) -> list:
        if seg.size == 0 or int(seg.max()) < num_classes:
            return []
        if seg.dtype == np.uint8:
            present = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))
        else:
            present = np.unique(seg)
        return [int(v) for v in present
                if v >= num_classes and v != self.ignore_index or v < 0]

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            return results
        path = results.get('seg_map_path') or 'the segmentation map'
        image = results.get('img_path')
        if self.check_size and results.get('ori_shape') is not None:
            want = tuple(results['ori_shape'][:2])
            if tuple(seg.shape[:2]) != want:
                raise DataLoadError(
                    f'segmentation map {path!r} is {seg.shape[0]}x'
                    f'{seg.shape[1]} (HxW) but its image '
                    f'{image!r} is {want[0]}x{want[1]}: a map must label '
                    'every pixel of its image (wrong file paired, or a '
                    'resized map)', path)
        num_classes = self.num_classes or results.get('num_classes')
        if num_classes is None:
            if not self._warned:
                self._warned = True
                print_log(
                    'CheckSegMap: no num_classes (argument or dataset); '
                    'only the size of the maps is checked',
                    logger='current', level=30)
            return results
        bad = self._labels_outside(seg, int(num_classes))
        if bad:
            shown = ', '.join(map(str, bad[:10])) + (
                ', ...' if len(bad) > 10 else '')
            reduced = (' (after reduce_zero_label: file values are one '
                       'higher)' if results.get('reduce_zero_label') else '')
            raise DataLoadError(
                f'segmentation map {path!r} has labels {shown}{reduced}, '
                f'outside the {num_classes} classes (0..{num_classes - 1}) '
                f'and not the ignore index {self.ignore_index}', path)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, '
                f'check_size={self.check_size})')
