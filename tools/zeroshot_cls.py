"""Zero-shot image classification of an ImageNet-layout folder.

    python tools/zeroshot_cls.py CONFIG DATA_DIR [--classes names.txt]
        [--checkpoint CKPT] [--inmap] [--out results.json]

DATA_DIR holds one sub-folder per class (sorted folder order = label order).
Class names come from ``--classes`` (a vocabulary file whose lines follow the
sorted folders; ``name: description`` allowed) or from the folder names.
Prints and saves top-1 / top-5; with ``--inmap`` also the InMaP top-1 (vision
proxies learned transductively on the evaluated images).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.JPEG')


class ImageFolder:
    """``root/<class>/<image>`` with resize (shorter side) + centre crop
    (a map-style dataset for ``torch.utils.data.DataLoader``)."""

    def __init__(self, root, resize, crop_size, mean, std):
        if not osp.isdir(root):
            raise FileNotFoundError(f'image folder not found: {root!r}')
        self.classes = sorted(
            d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
        if not self.classes:
            raise ValueError(f'{root!r} has no class sub-folders')
        self.samples = []
        for label, cls in enumerate(self.classes):
            for name in sorted(os.listdir(osp.join(root, cls))):
                if name.endswith(IMAGE_SUFFIXES):
                    self.samples.append((osp.join(root, cls, name), label))
        if not self.samples:
            raise ValueError(f'{root!r}: no images ({IMAGE_SUFFIXES})')
        self.resize, self.crop_size = resize, crop_size
        import torch
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms import functional as TF
        path, label = self.samples[index]
        try:
            image = Image.open(path).convert('RGB')
        except (OSError, UnidentifiedImageError) as err:
            raise OSError(f'cannot read image {path!r}: {err}') from err
        image = TF.resize(image, self.resize,
                          interpolation=TF.InterpolationMode.BICUBIC)
        image = TF.center_crop(image, self.crop_size)
        pixels = TF.pil_to_tensor(image).float()  # RGB, 0..255
        return (pixels - self.mean) / self.std, label


def build_model(cfg, checkpoint=None, allow_partial=False):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from icar_dense.engine.checkpoint_check import watch_initialisation
    from icar_dense.utils.init_logging import quiet_init_weights
    init_default_scope('mmdet')
    model_cfg = cfg.model
    if checkpoint is not None:
        model_cfg.backbone.init_cfg = dict(type='Pretrained',
                                           checkpoint=checkpoint)
        model_cfg.text_classifier.init_cfg = dict(
            type='Pretrained', checkpoint=checkpoint,
            prefix='text_classifier.')
    backbone = MODELS.build(model_cfg.backbone)
    classifier = MODELS.build(model_cfg.text_classifier)
    # every tensor must come from the checkpoint: a file of another
    # architecture or text width must not be scored with random weights
    for name, module in (('backbone', backbone),
                         ('text_classifier', classifier)):
        source = _pretrained_file(module)
        if source is None:
            message = (f'zeroshot_cls: model.{name} has no '
                       "init_cfg=dict(type='Pretrained', checkpoint=...): "
                       'its weights would be random; give --checkpoint')
            if not allow_partial:
                sys.exit(message)
            print(f'{message} (--allow-partial-checkpoint: going on)')
            with quiet_init_weights():
                module.init_weights()
            continue
        with watch_initialisation(module, source, allow_partial), \
                quiet_init_weights():
            module.init_weights()
    return backbone.eval(), classifier.eval()


def _pretrained_file(module):
    cfgs = module.init_cfg or []
    cfgs = [cfgs] if isinstance(cfgs, dict) else list(cfgs)
    return next((c.get('checkpoint') for c in cfgs
                 if c.get('type') == 'Pretrained'), None)


def encode_images(backbone, classifier, loader, device):
    import torch
    from mmengine.utils import ProgressBar
    with torch.no_grad():
        return _encode_images(backbone, classifier, loader, device,
                              ProgressBar)


def _encode_images(backbone, classifier, loader, device, ProgressBar):
    import torch
    feats, labels = [], []
    bar = ProgressBar(len(loader.dataset))
    for images, targets in loader:
        maps = backbone(images.to(device))[-1]  # last stage, (N, C, h, w)
        pooled = maps.mean(dim=(2, 3))
        feats.append(classifier.embed_visual(pooled).float().cpu())
        labels.append(targets)
        for _ in range(len(targets)):
            bar.update()
    sys.stdout.write('\n')
    return torch.cat(feats), torch.cat(labels)


def topk_accuracy(logits, labels, ks=(1, 5)):
    result = {}
    for k in ks:
        k_eff = min(k, logits.shape[1])
        hits = (logits.topk(k_eff, dim=1).indices == labels[:, None]).any(1)
        result[f'top{k}'] = 100.0 * hits.float().mean().item()
    return result


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('config')
    parser.add_argument('data_dir', help='ImageNet-layout folder')
    parser.add_argument('--checkpoint', help='overrides the config')
    parser.add_argument('--classes', help='vocabulary file in folder order')
    parser.add_argument('--inmap', action='store_true',
                        help='also report InMaP (transductive) top-1')
    parser.add_argument('--out', help='results JSON (default: '
                        'work_dirs/zeroshot_cls/<config>.json)')
    parser.add_argument(
        '--device', help="'cuda', 'cpu', ... (default: 'cuda' when a GPU "
        "is available, else 'cpu')")
    parser.add_argument(
        '--allow-partial-checkpoint', action='store_true',
        help='run even when the checkpoint leaves tensors of the backbone '
        'or the text classifier at their initialisation (listed in a '
        'warning); without it that is an error')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main():
    args = parse_args()
    # heavy imports only once the arguments are known to be good
    import torch

    import icar_dense  # noqa: F401
    from icar_dense.checkpoint import write_json_atomic
    from mmengine.config import Config
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    dataset = ImageFolder(args.data_dir, cfg.data.resize, cfg.data.crop_size,
                          cfg.data.mean, cfg.data.std)
    if args.classes:
        from icar_dense.models.text import load_vocabulary
        vocabulary = load_vocabulary(args.classes)
        if len(vocabulary) != len(dataset.classes):
            sys.exit(f'zeroshot_cls: {args.classes} lists {len(vocabulary)} '
                     f'classes but {args.data_dir} has '
                     f'{len(dataset.classes)} class folders')
        cfg.model.text_classifier.vocabulary = args.classes
    else:
        cfg.model.text_classifier.vocabulary = [
            name.replace('_', ' ') for name in dataset.classes
        ]

    backbone, classifier = build_model(cfg, args.checkpoint,
                                       args.allow_partial_checkpoint)
    backbone.to(args.device)
    classifier.to(args.device)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.data.batch_size,
        num_workers=cfg.data.get('num_workers', 0), shuffle=False)

    start = time.time()
    print(f'encoding {len(classifier.class_names)} class names '
          f'x {cfg.model.text_classifier.get("templates", "imagenet80")} '
          'templates')
    with torch.no_grad():
        text = classifier.class_embeddings().float().cpu()  # (C, D)
    print(f'encoding {len(dataset)} images')
    feats, labels = encode_images(backbone, classifier, loader, args.device)
    logits = feats @ text.t()
    results = dict(config=args.config, data_dir=args.data_dir,
                   num_images=len(dataset), num_classes=text.shape[0],
                   text_proxy=topk_accuracy(logits, labels))
    if args.inmap:
        from icar_dense.inmap import learn_vision_proxies
        inmap_cfg = dict(cfg.get('inmap', {}))
        out = learn_vision_proxies(feats, text.t().contiguous(), **inmap_cfg,
                                   progress=True)
        for variant in ('no_sinkhorn', 'full'):
            proxies = out.proxies[variant].float()
            results[f'inmap_{variant}'] = topk_accuracy(
                feats @ proxies, labels)
    results['seconds'] = round(time.time() - start, 2)

    out_path = args.out or osp.join(
        'work_dirs', 'zeroshot_cls',
        osp.splitext(osp.basename(args.config))[0] + '.json')
    write_json_atomic(results, out_path)  # saved before it is printed
    print(json.dumps(results, indent=2))
    print(f'results written to {out_path}')


if __name__ == '__main__':
    main()
