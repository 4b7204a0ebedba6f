"""Predict on one image or video with any class list and save a picture.

    python tools/demo.py INPUT CONFIG CHECKPOINT --vocabulary "cat,dog" \
        [--out-file out.jpg] [--device cuda:0] [--score-thr 0.3]

The task follows the config's ``default_scope``: detection (boxes, masks and
labels drawn by mmdet's visualizer), segmentation (colour-coded classes with
a legend) or action recognition (the top-5 labels of a video, written as a
picture of its frames or as .json).  The arguments are parsed before
anything heavy is imported (``--help`` answers at once).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('input', help='image (det/seg) or video (action)')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--vocabulary',
        help='classes: "a,b,c", a .txt/.json file or an embeddings file; '
        'default: the classes the model was trained with')
    parser.add_argument(
        '--out-file', help='where to write the picture (a video: a picture '
        'of its frames with the top-k labels, or .json)')
    parser.add_argument(
        '--device', help="'cuda', 'cuda:1', 'cpu', ... (default: 'cuda' "
        "when a GPU is available, else 'cpu')")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection score threshold')
    parser.add_argument('--topk', type=int, default=5,
                        help='labels printed for a video')
    parser.add_argument(
        '--allow-partial-checkpoint', action='store_true',
        help='predict even when the checkpoint leaves tensors of the model '
        'at their initialisation (listed in a warning); without it that is '
        'an error')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main():
    args = parse_args()
    # heavy imports only once the arguments are known to be good
    import torch

    import icar_dense  # noqa: F401
    from mmengine.config import Config
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from icar_dense.apis.det_demo import run_demo
    elif scope == 'mmseg':
        from icar_dense.apis.seg_demo import run_demo
    elif scope == 'mmaction':
        from icar_dense.apis.action_demo import run_demo
    else:
        sys.exit(f'demo: {args.config} has default_scope {scope!r}; '
                 "expected 'mmdet', 'mmseg' or 'mmaction'")
    run_demo(cfg, args)


if __name__ == '__main__':
    main()
