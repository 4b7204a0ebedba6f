"""Detect (and segment) objects of any vocabulary in one image.

Called by ``tools/demo.py IMAGE CONFIG CHECKPOINT --vocabulary "cat,dog"``
for configs whose ``default_scope`` is ``mmdet``: the detector is built like
mmdet's ``init_detector`` but the checkpoint goes through our safe loader,
the open-vocabulary heads get the requested class list, mmdet's
``inference_detector`` predicts and mmdet's ``DetLocalVisualizer`` draws the
boxes, masks and labels into the saved picture.
"""
import copy
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

from .pipeline import inference_pipeline


def ov_heads(model: torch.nn.Module) -> list:
    """The open-vocabulary box heads of a detector (one per cascade stage)."""
    from icar_dense.models.heads.det_heads import OVShared4Conv1FCBBoxHead
    return [m for m in model.modules()
            if isinstance(m, OVShared4Conv1FCBBoxHead)]


def load_detector_checkpoint(model: torch.nn.Module, path: str,
                             allow_partial: bool = False) -> dict:
    """Load a trained detector checkpoint with ``weights_only`` loading.

    Every tensor of the detector must come from the file (see
    :func:`icar_dense.engine.checkpoint_check.load_checked`): an iCAR
    pre-training file, mapped onto the backbone and the text classifiers,
    leaves the neck and the heads untrained and is refused, naming them,
    unless ``allow_partial`` (``--allow-partial-checkpoint``).

    Returns:
        dict: The checkpoint's ``meta`` (empty if it has none).
    """
    from icar_dense.engine.checkpoint_check import load_checked
    checkpoint = load_checked(model, path, allow_partial)
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return meta or {}


def init_ov_detector(cfg: Config, checkpoint: Optional[str],
                     device: str = 'cpu',
                     allow_partial: bool = False) -> torch.nn.Module:
    """``mmdet.apis.init_detector`` with the safe checkpoint loader.

    ``checkpoint=None`` (or ``'none'``) runs ``init_weights`` instead, i.e.
    the config's pretrained files.  A checkpoint that leaves tensors of the
    detector at their initialisation is refused unless ``allow_partial``.
    """
    from mmdet.registry import MODELS
    from mmengine.model.utils import revert_sync_batchnorm
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.train_cfg = None
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    if checkpoint is None or checkpoint.lower() == 'none':
        model.init_weights()
    else:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'demo: checkpoint {checkpoint!r} not found')
        load_detector_checkpoint(model, checkpoint, allow_partial)
    heads = ov_heads(model)
    names = heads[-1].class_names if heads else list(
        cfg.get('classes') or [])
    model.dataset_meta = dict(classes=tuple(names), palette='random')
    model.cfg = cfg
    return model.to(device).eval()


def run_demo(cfg: Config, args):
    """``tools/demo.py`` for detection configs.

    Args:
        cfg (Config): The config (``--cfg-options`` already merged).
        args: ``input`` (image), ``checkpoint``, ``vocabulary`` (optional:
            "a,b,c", a .txt/.json file, a dataset name or an embeddings
            file), ``out_file`` (default ``<image>_det.jpg`` in the working
            directory), ``device``, ``score_thr``.

    Returns:
        DetDataSample: The prediction (boxes in image pixels).
    """
    from mmdet.apis import inference_detector
    from icar_dense.engine.det_vis import OVDetLocalVisualizer
    import mmcv

    if not osp.isfile(args.input):
        raise FileNotFoundError(f'demo: image {args.input!r} not found')
    cfg = copy.deepcopy(cfg)
    if getattr(args, 'vocabulary', None):
        from icar_dense.engine.testing import use_vocabulary
        use_vocabulary(cfg, args.vocabulary)
    model = init_ov_detector(
        cfg, args.checkpoint, args.device,
        allow_partial=getattr(args, 'allow_partial_checkpoint', False))
    if not ov_heads(model):
        raise TypeError(f'demo: {cfg.filename!r} has no open-vocabulary box '
                        'head (OVShared4Conv1FCBBoxHead): its classes are '
                        'fixed by training')
    names = model.dataset_meta['classes']
    result = inference_detector(
        model, args.input, test_pipeline=Compose(inference_pipeline(cfg)))

    out_file = getattr(args, 'out_file', None) or (
        osp.splitext(osp.basename(args.input))[0] + '_det.jpg')
    if osp.dirname(out_file):
        os.makedirs(osp.dirname(out_file), exist_ok=True)
    visualizer = OVDetLocalVisualizer.get_instance(
        f'icar_det_demo_{id(model)}')
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imread(args.input, channel_order='rgb')
    score_thr = getattr(args, 'score_thr', 0.3)
    visualizer.add_datasample(
        osp.basename(args.input), image, data_sample=result, draw_gt=False,
        show=False, pred_score_thr=score_thr, out_file=out_file)
    if not osp.isfile(out_file):
        raise OSError(f'demo: could not write {out_file!r}')
    pred = result.pred_instances
    keep = pred.scores >= score_thr
    print(f'{int(keep.sum())} detections with score >= {score_thr} '
          f'(vocabulary of {len(names)} classes)')
    if not bool(keep.any()) and len(pred):
        # the picture then shows the best few with their scores: say so
        keep = pred.scores >= pred.scores.topk(
            min(visualizer.fallback_topk, len(pred))).values[-1]
        print(f'none clears {score_thr}: the picture shows the top '
              f'{int(keep.sum())} with their scores')
    for label, score, box in zip(pred.labels[keep], pred.scores[keep],
                                 pred.bboxes[keep]):
        coords = ', '.join(f'{v:.0f}' for v in box.tolist())
        print(f'  {names[int(label)]}: {float(score):.2f} [{coords}]')
    print(f'saved {out_file}')
    return result
