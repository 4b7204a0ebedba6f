"""``tools/demo.py VIDEO CONFIG CKPT`` for action recognition configs.

Builds the recognizer with mmaction2's ``init_recognizer`` (any checkpoint
the model reads: a trained recognizer or an official iCAR file), swaps in
``--vocabulary`` when given, runs the config's ``test_pipeline`` on the
video with ``inference_recognizer`` and prints the top-k labels; with
``--out-file`` they are also written as JSON.
"""
import os.path as osp

import torch

from icar_dense.engine.hooks import write_json_atomic


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


def run_demo(cfg, args):
    """Predict the action of ``args.input`` and print the top-k labels.

    Args:
        cfg (Config): An action config (``default_scope='mmaction'``).
        args (Namespace): ``input``, ``checkpoint``, ``vocabulary``,
            ``out_file``, ``device``, ``topk`` of ``tools/demo.py``.

    Returns:
        list[dict]: The top-k labels with their scores.
    """
    from mmaction.apis import inference_recognizer, init_recognizer

    from icar_dense.engine.testing import use_vocabulary
    if not osp.isfile(args.input):
        raise FileNotFoundError(f'demo: video not found: {args.input!r}')
    if 'test_pipeline' not in cfg:
        raise KeyError(f'demo: config {cfg.filename!r} defines no '
                       'test_pipeline (mmaction reads it for inference)')
    if getattr(args, 'vocabulary', None):
        use_vocabulary(cfg, args.vocabulary)
    model = init_recognizer(cfg, args.checkpoint, device=args.device)
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
    if getattr(args, 'out_file', None):
        write_json_atomic(
            dict(
                video=args.input,
                checkpoint=args.checkpoint,
                num_classes=len(names),
                average_clips=kind,
                top=labels), args.out_file)
        print(f'wrote {args.out_file}')
    return labels
