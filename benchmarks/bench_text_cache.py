# Copyright (c) icar_dense contributors. All rights reserved.
"""Time building a vocabulary's text embeddings vs reading the disk cache.

The default is the LVIS case: 1203 classes x the 80 CLIP ImageNet templates
(96,240 prompts) through a RoBERTa-base-sized encoder (768 wide, 12 layers;
random weights, as no RoBERTa weights ship offline) with iCAR's max_length of
16.  The tokenizer is a byte-level BPE trained on the prompts, as in the
tests.  Prints one JSON object.

    python benchmarks/bench_text_cache.py                 # full LVIS size
    python benchmarks/bench_text_cache.py --quick         # smoke run
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os.path as osp  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _common import machine_info  # noqa: E402,I100
from mmengine.logging import MMLogger  # noqa: E402

import icar_dense  # noqa: E402,F401  (registers the modules)
from icar_dense.models.text import TextClassifier, get_templates  # noqa: E402
from icar_dense.models.text.cache import state_dict_fingerprint  # noqa: E402

SPECIAL_TOKENS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--classes', type=int, default=1203)
    parser.add_argument('--templates', type=int, default=80)
    parser.add_argument(
        '--quick',
        action='store_true',
        help='smoke run: 24 classes x 4 templates')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--work-dir',
        default=None,
        help='folder for the tokenizer and the cache (default: a temporary '
        'folder, removed afterwards)')
    return parser.parse_args(argv)


def class_names(num: int):
    """LVIS v1 names (real ones first), extended synthetically if needed."""
    from mmdet.datasets import LVISV1Dataset
    names = list(LVISV1Dataset.METAINFO['classes'])
    extra = [f'{names[i % len(names)]} variant {i}' for i in range(num)]
    return (names + extra)[:num]


def build_tokenizer(folder: str, corpus) -> str:
    from tokenizers import ByteLevelBPETokenizer
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        corpus,
        vocab_size=8000,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False)
    tokenizer.save_model(folder)
    return folder


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.classes = min(args.classes, 24)
        args.templates = min(args.templates, 4)
    # stdout carries only the JSON result; progress logs go to stderr
    for handler in MMLogger.get_current_instance().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setStream(sys.stderr)

    names = class_names(args.classes)
    templates = get_templates('imagenet80')[:args.templates]
    work = tempfile.TemporaryDirectory() if args.work_dir is None else None
    root = args.work_dir or work.name
    tok_dir = osp.join(root, 'tokenizer')
    os.makedirs(tok_dir, exist_ok=True)
    corpus = [
        t.replace('{}', n.replace('_', ' ')) for n in names
        for t in get_templates('imagenet80')[:8]
    ]
    build_tokenizer(tok_dir, corpus)

    def build():
        # RobertaConfig defaults are roberta-base: 768 wide, 12 layers,
        # 12 heads, 50265 tokens
        return TextClassifier(
            in_channels=1024,
            embed_dim=256,
            text_encoder=dict(
                type='RobertaTextEncoder',
                config=dict(),
                tokenizer=tok_dir,
                max_length=16,
                embed_dim=256,
                batch_size=args.batch_size),
            vocabulary=names,
            templates=templates,
            cache_dir=osp.join(root, 'cache')).to(args.device).eval()

    torch.manual_seed(0)
    cold = build()
    num_params = sum(p.numel() for p in cold.text_encoder.parameters())

    synchronize(args.device)
    t0 = time.perf_counter()
    embeds = cold.class_embeddings()
    synchronize(args.device)
    encode_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    cold.class_embeddings()
    synchronize(args.device)
    memory_s = time.perf_counter() - t0

    # a new process-like instance: same weights, empty memory cache
    warm = build()
    warm.load_state_dict(cold.state_dict())
    synchronize(args.device)
    t0 = time.perf_counter()
    cached = warm.class_embeddings()
    synchronize(args.device)
    disk_s = time.perf_counter() - t0
    if not torch.allclose(cached, embeds, atol=1e-6):
        raise RuntimeError('embeddings read from the cache differ')

    t0 = time.perf_counter()
    state_dict_fingerprint(warm.text_encoder.state_dict().items())
    fingerprint_s = time.perf_counter() - t0
    cache_files = os.listdir(osp.join(root, 'cache'))
    cache_bytes = sum(
        osp.getsize(osp.join(root, 'cache', f)) for f in cache_files)

    print(
        json.dumps(
            dict(
                benchmark='text_embedding_cache',
                classes=args.classes,
                templates=args.templates,
                prompts=len(cold.prompts.texts),
                encoder='RobertaTextEncoder(roberta-base config, random)',
                encoder_params=num_params,
                max_length=16,
                batch_size=args.batch_size,
                device=args.device,
                torch_threads=torch.get_num_threads(),
                encode_s=round(encode_s, 3),
                disk_cache_load_s=round(disk_s, 3),
                weights_fingerprint_s=round(fingerprint_s, 3),
                memory_cache_s=round(memory_s, 6),
                speedup_disk_vs_encode=round(encode_s / disk_s, 1),
                cache_file_bytes=cache_bytes,
                torch=torch.__version__,
                machine=machine_info(args.device),
                quick=args.quick)))
    if work is not None:
        work.cleanup()


if __name__ == '__main__':
    main()
