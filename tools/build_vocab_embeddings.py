"""Precompute a vocabulary's text embeddings into a file.

    python tools/build_vocab_embeddings.py CONFIG VOCABULARY OUT.pth \
        [--templates imagenet80] [--no-descriptions] [--checkpoint CKPT]

The text classifier of CONFIG (its text encoder, templates and weights, e.g.
from ``init_cfg`` or ``--checkpoint``) encodes VOCABULARY (a .txt/.json file,
a dataset name such as ``lvis_v1``, or "a,b,c") with the prompt ensemble.
The file holds ``class_names``, ``embeddings`` (C x D), ``templates`` and
``meta``; any config (``embeddings=OUT.pth`` on its TextClassifier) or
``tools/test.py --vocabulary OUT.pth`` then classifies without a text
encoder, like Detic's shipped classifier files.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def find_text_classifier(node, path='model'):
    """The first TextClassifier config dict in a model config."""
    if isinstance(node, dict):
        if node.get('type') == 'TextClassifier':
            return node, path
        for key, value in node.items():
            found = find_text_classifier(value, f'{path}.{key}')
            if found[0] is not None:
                return found
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found = find_text_classifier(value, f'{path}[{i}]')
            if found[0] is not None:
                return found
    return None, None


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('config')
    parser.add_argument('vocabulary')
    parser.add_argument('out')
    parser.add_argument('--templates', help="'imagenet80', 'single' or a "
                        'text file with one template ({} = class) per line')
    parser.add_argument('--no-descriptions', action='store_true')
    parser.add_argument('--checkpoint',
                        help='weights for the text classifier (converted '
                        'or official iCAR checkpoint)')
    parser.add_argument(
        '--device', help="'cuda', 'cpu', ... (default: 'cuda' when a GPU "
        "is available, else 'cpu')")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main():
    args = parse_args()
    # heavy imports only once the arguments are known to be good
    import torch

    import icar_dense  # noqa: F401
    from icar_dense.utils.init_logging import quiet_init_weights
    from mmengine.config import Config
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    clf_cfg, where = find_text_classifier(cfg.model)
    if clf_cfg is None:
        sys.exit(f'build_vocab_embeddings: {args.config} has no '
                 'TextClassifier in its model')
    from icar_dense.engine.testing import read_vocabulary_argument
    source, embeddings, _ = read_vocabulary_argument(args.vocabulary)
    if embeddings is not None:
        sys.exit('build_vocab_embeddings: the vocabulary is already an '
                 'embeddings file')
    clf_cfg = dict(clf_cfg, vocabulary=source, embeddings=None)
    if args.no_descriptions:
        clf_cfg['descriptions'] = False
    if args.templates:
        if osp.isfile(args.templates):
            with open(args.templates) as f:
                clf_cfg['templates'] = [
                    line.strip() for line in f if line.strip()]
        else:
            clf_cfg['templates'] = args.templates
    if args.checkpoint:
        clf_cfg['init_cfg'] = dict(type='Pretrained',
                                   checkpoint=args.checkpoint,
                                   prefix='text_classifier.')
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmengine.registry import MODELS
    classifier = MODELS.build(clf_cfg)
    with quiet_init_weights():
        classifier.init_weights()
    classifier.to(args.device).eval()
    print(f'{where}: encoding {classifier.num_classes} classes')
    start = time.time()
    classifier.save_embeddings(args.out)
    print(f'wrote {args.out} ({classifier.num_classes} classes) in '
          f'{time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
