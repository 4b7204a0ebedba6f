"""``tools/demo.py VIDEO CONFIG CKPT`` for action recognition configs.

Builds the recognizer with mmaction2's ``init_recognizer`` (any checkpoint
the model reads: a trained recognizer or an official iCAR file), swaps in
``--vocabulary`` when given, runs the config's ``test_pipeline`` on the
video with ``inference_recognizer`` and prints the top-k labels.  With
``--out-file`` they are also written: a picture (``.jpg``/``.png``/...:
frames of the video over a panel listing the top-k labels and scores), or
JSON (``.json``); another suffix is refused before the model is built.
"""
import os.path as osp

import numpy as np
import torch

from icar_dense.engine.checkpoint_check import load_checked
from icar_dense.checkpoint import write_json_atomic


def top_labels(scores, class_names, k=5):
    """``[{'rank', 'label', 'index', 'score'}, ...]`` of the k best classes."""
    scores = torch.as_tensor(scores).flatten().float()
    if scores.numel() != len(class_names):
        raise ValueError(f'{scores.numel()} scores for {len(class_names)} '
                         'class names')
    values, indices = scores.topk(min(k, scores.numel()))
    return [
        dict(
            rank=rank + 1, label=class_names[i], index=int(i), score=float(v))
        for rank, (v, i) in enumerate(zip(values.tolist(), indices.tolist()))
    ]


def build_recognizer(cfg, checkpoint, device='cpu', allow_partial=False):
    """mmaction2's ``init_recognizer``, the checkpoint loaded and checked.

    The model is built by ``init_recognizer`` without a checkpoint, then
    :func:`~icar_dense.engine.checkpoint_check.load_checked` loads the file
    (a trained recognizer, or an official iCAR file that
    ``ICARRecognizer3D`` maps) and refuses it when tensors of the model
    stay at their initialisation, unless ``allow_partial``.
    """
    from mmaction.apis import init_recognizer
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'demo: checkpoint {checkpoint!r} not found')
    model = init_recognizer(cfg, None, device='cpu')
    load_checked(model, checkpoint, allow_partial)
    return model.to(device).eval()


PICTURE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
OUT_SUFFIXES = PICTURE_SUFFIXES + ('.json', )


def check_out_file(out_file):
    """Refuse an ``--out-file`` whose suffix is neither a picture nor
    JSON (before anything is built)."""
    if out_file and not out_file.lower().endswith(OUT_SUFFIXES):
        raise ValueError(
            f'demo: --out-file {out_file!r}: a video result is written as a '
            f'picture ({", ".join(PICTURE_SUFFIXES)}: frames with the top-k '
            'labels) or as JSON (.json)')


def read_frames(video, num_frames=4):
    """``num_frames`` RGB frames spread evenly over ``video``."""
    import mmcv
    reader = mmcv.VideoReader(video)
    total = len(reader)
    if total <= 0:
        raise ValueError(f'demo: cannot read frames of {video!r}')
    picks = np.linspace(0, total - 1, num=min(num_frames, total))
    frames = []
    for index in np.unique(picks.round().astype(int)):
        frame = reader.get_frame(int(index))
        if frame is not None:
            frames.append(mmcv.bgr2rgb(frame))
    if not frames:
        raise ValueError(f'demo: cannot read frames of {video!r}')
    return frames


def draw_top_labels(frames, labels, title, height=240):
    """A picture: ``frames`` side by side over a panel with one line per
    label (``rank. label: score``) and a score bar.

    Returns:
        np.ndarray: The picture, RGB uint8.
    """
    import cv2
    import mmcv
    row = [mmcv.imrescale(f, (10000, height)) for f in frames]
    row = np.concatenate(row, axis=1)
    width = max(row.shape[1], 480)
    if row.shape[1] < width:
        pad = np.zeros((row.shape[0], width - row.shape[1], 3), np.uint8)
        row = np.concatenate([row, pad], axis=1)
    line_h = 28
    panel = np.full((line_h * (len(labels) + 1) + 10, width, 3), 255,
                    np.uint8)
    cv2.putText(panel, title, (8, line_h - 8), cv2.FONT_HERSHEY_SIMPLEX,
                0.6, (0, 0, 0), 1, cv2.LINE_AA)
    top = max(item['score'] for item in labels) if labels else 1.0
    for i, item in enumerate(labels):
        y = line_h * (i + 2) - 8
        bar = int((width - 16) * max(item['score'], 0) / max(top, 1e-12))
        cv2.rectangle(panel, (8, y - line_h + 12), (8 + bar, y + 4),
                      (200, 225, 255), -1)
        text = f"{item['rank']}. {item['label']}: {item['score']:.4f}"
        cv2.putText(panel, text, (12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([row, panel], axis=0)


def run_demo(cfg, args):
    """Predict the action of ``args.input`` and print the top-k labels.

    Args:
        cfg (Config): An action config (``default_scope='mmaction'``).
        args (Namespace): ``input``, ``checkpoint``, ``vocabulary``,
            ``out_file``, ``device``, ``topk`` of ``tools/demo.py``.

    Returns:
        list[dict]: The top-k labels with their scores.
    """
    from mmaction.apis import inference_recognizer

    from icar_dense.engine.testing import use_vocabulary
    if not osp.isfile(args.input):
        raise FileNotFoundError(f'demo: video not found: {args.input!r}')
    out_file = getattr(args, 'out_file', None)
    check_out_file(out_file)
    if 'test_pipeline' not in cfg:
        raise KeyError(f'demo: config {cfg.filename!r} defines no '
                       'test_pipeline (mmaction reads it for inference)')
    if getattr(args, 'vocabulary', None):
        use_vocabulary(cfg, args.vocabulary)
    model = build_recognizer(
        cfg, args.checkpoint, args.device,
        allow_partial=getattr(args, 'allow_partial_checkpoint', False))
    result = inference_recognizer(model, args.input)
    head = model.cls_head
    names = (
        list(head.class_names) if hasattr(head, 'class_names') else
        [str(i) for i in range(result.pred_score.numel())])
    labels = top_labels(result.pred_score, names, getattr(args, 'topk', 5))
    # the head averages 'prob' (softmax) over clips x crops with the zoo
    # configs; otherwise the scores are averaged logits
    kind = getattr(head, 'average_clips', None) or 'score'
    print(f'{osp.basename(args.input)}: top-{len(labels)} of '
          f'{len(names)} classes ({kind})')
    for item in labels:
        print(f"{item['rank']}. {item['label']}: {item['score']:.4f}")
    if out_file and out_file.lower().endswith('.json'):
        write_json_atomic(
            dict(
                video=args.input,
                checkpoint=args.checkpoint,
                num_classes=len(names),
                average_clips=kind,
                top=labels), out_file)
        print(f'wrote {out_file}')
    elif out_file:
        import mmcv
        picture = draw_top_labels(
            read_frames(args.input), labels,
            f'{osp.basename(args.input)}: top-{len(labels)} of '
            f'{len(names)} classes ({kind})')
        if not mmcv.imwrite(mmcv.rgb2bgr(picture), out_file):
            raise OSError(f'demo: could not write {out_file!r}')
        print(f'wrote {out_file}')
    return labels
