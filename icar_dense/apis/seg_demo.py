"""Segment one image with any vocabulary and draw it with a legend.

Called by ``tools/demo.py IMAGE CONFIG CHECKPOINT --vocabulary ...`` for
configs whose ``default_scope`` is ``mmseg``.  The picture is the image with
the predicted classes blended in colour, next to a legend of the classes
present (colour swatch, name, share of the pixels), largest first.
"""
import copy
import hashlib
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

from icar_dense.engine.checkpoint_check import load_checked
from .pipeline import inference_pipeline

ALPHA = 0.5
LEGEND_ROW = 22  # pixels per legend row at scale 1


def class_palette(names: Sequence[str]) -> List[Tuple[int, int, int]]:
    """RGB colours: ADE20K's palette for ADE20K class names, else a fixed
    pseudo-random colour per name (stable across runs and vocabularies)."""
    from mmseg.datasets import ADE20KDataset
    ade = dict(
        zip(ADE20KDataset.METAINFO['classes'],
            ADE20KDataset.METAINFO['palette']))
    colours = []
    for name in names:
        if name in ade:
            colours.append(tuple(int(c) for c in ade[name]))
        else:
            digest = hashlib.sha1(name.encode('utf-8')).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], 'little'))
            colours.append(tuple(int(c) for c in rng.integers(0, 256, 3)))
    return colours


def build_segmentor(cfg: Config, checkpoint: Optional[str],
                    device: str = 'cpu',
                    allow_partial: bool = False) -> torch.nn.Module:
    """Build the config's model and load a checkpoint into it.

    ``checkpoint`` may be a segmentation checkpoint or an iCAR one (official
    or converted: ``ICAREncoderDecoder`` maps it); ``None`` or ``'none'``
    runs ``init_weights`` (the config's pretrained files) instead.  A
    checkpoint that leaves tensors of the model at their initialisation
    (e.g. the iCAR file given to a UperNet config: the decoder is not in
    it) is refused unless ``allow_partial``.
    """
    from mmseg.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.train_cfg = None
    model = MODELS.build(model_cfg)
    if checkpoint is None or checkpoint.lower() == 'none':
        model.init_weights()
    else:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'demo: checkpoint {checkpoint!r} not '
                                    'found')
        load_checked(model, checkpoint, allow_partial)
    model.cfg = cfg
    return model.to(device).eval()


def predict(model: torch.nn.Module, image_path: str) -> np.ndarray:
    """Label map (H, W) of class indices at the image's own size."""
    pipeline = Compose(inference_pipeline(model.cfg))
    data = pipeline(dict(img_path=image_path))
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        result = model.test_step(batch)[0]
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)


def draw_segmentation(image: np.ndarray, labels: np.ndarray,
                      names: Sequence[str],
                      palette: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """Blend the label map into the image (BGR) and append a legend.

    Returns:
        np.ndarray: BGR picture, the image on the left and a white legend
        panel on the right listing the classes present.
    """
    height, width = labels.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f'image {image.shape[:2]} and labels '
                         f'{labels.shape} differ in size')
    colours = np.array(palette, dtype=np.uint8)[:, ::-1]  # RGB -> BGR
    overlay = colours[labels]
    blended = cv2.addWeighted(image, 1 - ALPHA, overlay, ALPHA, 0)
    present = legend_entries(labels, names)
    scale = max(0.9, min(2.0, height / 500))  # readable on small images
    row = int(LEGEND_ROW * scale)
    font = cv2.FONT_HERSHEY_SIMPLEX
    texts = [f'{names[i]} {share:.1%}' for i, share in present]
    text_w = max([cv2.getTextSize(t, font, 0.5 * scale, 1)[0][0]
                  for t in texts] + [0])
    panel_w = row + 12 + text_w + 10
    panel_h = max(height, row * len(present) + 10)
    panel = np.full((panel_h, panel_w, 3), 255, np.uint8)
    for k, ((cls, _), text) in enumerate(zip(present, texts)):
        y0 = 5 + k * row
        colour = tuple(int(c) for c in colours[cls])
        cv2.rectangle(panel, (5, y0 + 2), (5 + row - 4, y0 + row - 2), colour,
                      thickness=-1)
        cv2.putText(panel, text, (row + 8, y0 + int(row * 0.72)), font,
                    0.5 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((panel_h, width + panel_w, 3), 255, np.uint8)
    canvas[:height, :width] = blended
    canvas[:, width:] = panel
    return canvas


def legend_entries(labels: np.ndarray,
                   names: Sequence[str]) -> List[Tuple[int, float]]:
    """(class index, pixel share) of the classes present, largest first."""
    counts = np.bincount(labels.ravel(), minlength=len(names))
    total = max(1, labels.size)
    order = [int(i) for i in np.argsort(-counts, kind='stable')
             if counts[i] > 0]
    return [(i, counts[i] / total) for i in order]


def run_demo(cfg: Config, args) -> Dict[str, float]:
    """``tools/demo.py`` for segmentation configs.

    Args:
        cfg (Config): The config (``--cfg-options`` already merged).
        args: ``input`` (image), ``checkpoint``, ``vocabulary`` (optional),
            ``out_file`` (optional, default ``<image>_seg.jpg`` in the
            working directory), ``device``.

    Returns:
        dict: class name -> pixel share of the classes present.
    """
    if not osp.isfile(args.input):
        raise FileNotFoundError(f'demo: image {args.input!r} not found')
    if getattr(args, 'vocabulary', None):
        from icar_dense.engine.testing import use_vocabulary
        use_vocabulary(cfg, args.vocabulary)
    model = build_segmentor(
        cfg, args.checkpoint, args.device,
        allow_partial=getattr(args, 'allow_partial_checkpoint', False))
    if not hasattr(model, 'class_names'):
        raise TypeError(f'demo: {type(model).__name__} has no text '
                        'classifier; use an ICAREncoderDecoder config')
    names = model.class_names
    labels = predict(model, args.input)
    image = cv2.imread(args.input, cv2.IMREAD_COLOR)
    picture = draw_segmentation(image, labels, names, class_palette(names))
    out_file = getattr(args, 'out_file', None) or (
        osp.splitext(osp.basename(args.input))[0] + '_seg.jpg')
    if osp.dirname(out_file):
        os.makedirs(osp.dirname(out_file), exist_ok=True)
    if not cv2.imwrite(out_file, picture):
        raise OSError(f'demo: could not write {out_file!r}')
    shares = {names[i]: share for i, share in legend_entries(labels, names)}
    print(f'{len(shares)} of {len(names)} classes present: ' + ', '.join(
        f'{name} {share:.1%}' for name, share in shares.items()))
    print(f'saved {out_file}')
    return shares
