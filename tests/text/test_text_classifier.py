# Copyright (c) icar_dense contributors. All rights reserved.
import os

if os.environ.get('HF_HUB_OFFLINE') != '1':
    # before transformers is imported: each failed hub call retries for
    # tens of seconds, and there is no hub here
    os.environ['HF_HUB_OFFLINE'] = '1'

import json
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from helpers_text import (CLASS_NAMES, EncodeCounter,
                          tiny_clip_cfg, tiny_roberta_config,
                          tiny_roberta_encoder_cfg, tokenizer_size)

import icar_dense  # noqa: F401
from icar_dense.models.text import (CLIPTextTransformer, RobertaTextEncoder,
                                    TextClassifier, clip_text_state_dict,
                                    load_roberta_tokenizer)

TEMPLATES = ['a photo of a {}.', 'a sketch of the {}.', 'art of the {}.']


def _classifier(tok_dir, **kwargs):
    torch.manual_seed(kwargs.pop('seed', 0))
    cfg = dict(
        in_channels=8,
        embed_dim=16,
        text_encoder=tiny_roberta_encoder_cfg(tok_dir),
        vocabulary=list(CLASS_NAMES),
        templates=list(TEMPLATES))
    cfg.update(kwargs)
    return TextClassifier(**cfg)


def _hand_ensemble(encoder, subjects, templates):
    """Normalise per prompt, average per class, normalise (by hand)."""
    rows = []
    with torch.no_grad():
        for subject in subjects:
            embeds = encoder.encode(
                [t.replace('{}', subject) for t in templates])
            rows.append(
                F.normalize(F.normalize(embeds, dim=-1).mean(0), dim=0))
    return torch.stack(rows)


# ----------------------------------------------------------------------------
# RoBERTa tower
# ----------------------------------------------------------------------------
def test_tokenizer_is_real_and_checked(tok_dir, tmp_path):
    tokenizer = load_roberta_tokenizer(tok_dir)
    assert len(tokenizer) == tokenizer_size(tok_dir) > 256
    assert tokenizer.pad_token_id == 1
    ids = tokenizer('a photo of a traffic light.')['input_ids']
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == 2
    assert tokenizer.unk_token_id not in ids
    # BPE merges learnt from the corpus: 'photo' is one token
    assert len(tokenizer.tokenize(' photo')) == 1

    with pytest.raises(FileNotFoundError, match='no_such_tokenizer'):
        load_roberta_tokenizer(str(tmp_path / 'no_such_tokenizer'))
    empty = tmp_path / 'empty_tokenizer'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='vocab.json'):
        load_roberta_tokenizer(str(empty))
    # files present but holding only the special tokens: transformers loads
    # this without complaint, the encoder must not
    degenerate = tmp_path / 'degenerate'
    degenerate.mkdir()
    (degenerate / 'vocab.json').write_text(
        json.dumps({
            t: i
            for i, t in enumerate(['<s>', '<pad>', '</s>', '<unk>', '<mask>'])
        }))
    (degenerate / 'merges.txt').write_text('#version: 0.2\n')
    with pytest.raises(ValueError, match='only 5 tokens'):
        load_roberta_tokenizer(str(degenerate))


def test_roberta_encoder_checks(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing_model'):
        RobertaTextEncoder(model=str(tmp_path / 'missing_model'))
    with pytest.raises(FileNotFoundError, match='missing_tok'):
        RobertaTextEncoder(
            config=tiny_roberta_config(400),
            tokenizer=str(tmp_path / 'missing_tok'))
    small = tiny_roberta_config(300)  # fewer rows than tokenizer tokens
    with pytest.raises(ValueError, match='only embeds 300'):
        RobertaTextEncoder(config=small, tokenizer=tok_dir)
    with pytest.raises(ValueError, match='max_position_embeddings'):
        RobertaTextEncoder(
            config=tiny_roberta_config(tokenizer_size(tok_dir)),
            tokenizer=tok_dir,
            max_length=64)


def test_roberta_pretrained_folder_and_names(tok_dir, tmp_path):
    torch.manual_seed(0)
    encoder = RobertaTextEncoder(
        config=tiny_roberta_config(tokenizer_size(tok_dir)),
        tokenizer=tok_dir,
        embed_dim=16)
    names = dict(encoder.named_children())
    assert set(names) == {'backbone', 'projector'}
    assert encoder.projector.weight.shape == (16, 32)
    assert encoder.projector.bias is None
    # a from_pretrained folder (weights + tokenizer) round-trips
    encoder.backbone.save_pretrained(str(tmp_path / 'model'))
    encoder.tokenizer.save_pretrained(str(tmp_path / 'model'))
    loaded = RobertaTextEncoder(model=str(tmp_path / 'model'), embed_dim=16)
    loaded.projector.load_state_dict(encoder.projector.state_dict())
    texts = ['a photo of a cat.', 'a dog']
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(texts), encoder.encode(texts))


def test_masked_mean_pooling_ignores_padding(tok_dir):
    torch.manual_seed(0)
    encoder = RobertaTextEncoder(
        config=tiny_roberta_config(tokenizer_size(tok_dir)),
        tokenizer=tok_dir,
        embed_dim=16).eval()
    long_text = 'a bad photo of the bow (weapon), a weapon that shoots'
    tokens = encoder.tokenize(['cat', long_text])
    assert tokens['attention_mask'][0].sum() < tokens['input_ids'].shape[1]
    with torch.no_grad():
        alone = encoder.encode(['cat'])
        padded = encoder.encode(['cat', long_text])[:1]
        # an unmasked mean over the same padded batch would differ
        hidden = encoder.backbone(
            input_ids=tokens['input_ids'],
            attention_mask=tokens['attention_mask']).last_hidden_state
        unmasked = encoder.projector(hidden.mean(1))[:1]
        # prompts are lower-cased, as in iCAR
        upper = encoder.encode(['CAT'])
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)
    torch.testing.assert_close(upper, alone)
    # max_length truncates
    ids = encoder.tokenize([' '.join(['cat'] * 40)])['input_ids']
    assert ids.shape[1] == encoder.max_length == 16


# ----------------------------------------------------------------------------
# TextClassifier
# ----------------------------------------------------------------------------
def test_forward_is_scaled_cosine(tok_dir):
    clf = _classifier(tok_dir).eval()
    feats = torch.randn(2, 5, 8)
    logits = clf(feats)
    assert logits.shape == (2, 5, len(CLASS_NAMES))
    torch.testing.assert_close(clf(feats.clone()), logits)
    expected = F.normalize(feats @ clf.visual_proj.weight.t(), dim=-1) @ \
        clf.class_embeddings().t() / 0.05
    torch.testing.assert_close(logits, expected)
    assert logits.abs().max() <= 1 / 0.05 + 1e-4
    dense = clf.forward_dense(feats.permute(0, 2, 1))
    torch.testing.assert_close(dense, logits.permute(0, 2, 1))
    assert 'logit_scale' not in clf.state_dict()
    assert all(not p.requires_grad for p in clf.text_encoder.parameters())
    # features already in the joint space
    identity = _classifier(tok_dir, in_channels=None)
    assert isinstance(identity.visual_proj, torch.nn.Identity)
    assert identity.eval()(torch.randn(3, 16)).shape == (3, 4)


@pytest.mark.parametrize('tau', [0, -0.1, float('nan'), None])
def test_tau_must_be_positive(tok_dir, tau):
    with pytest.raises(ValueError, match='tau must be a number > 0'):
        _classifier(tok_dir, tau=tau)


def test_eval_ensemble_equals_hand_computed_mean(tok_dir):
    clf = _classifier(tok_dir).eval()
    expected = _hand_ensemble(clf.text_encoder,
                              ['cat', 'dog', 'bow (weapon)', 'traffic light'],
                              TEMPLATES)
    torch.testing.assert_close(clf.class_embeddings(), expected)


def test_descriptions_change_the_embedding(tok_dir):
    vocab = {'cat': 'a small domesticated carnivorous mammal', 'dog': None}
    plain = _classifier(tok_dir, vocabulary=dict(vocab), descriptions=False)
    described = _classifier(tok_dir, vocabulary=dict(vocab))
    a = plain.eval().class_embeddings()
    b = described.eval().class_embeddings()
    assert not torch.allclose(a[0], b[0], atol=1e-4)
    torch.testing.assert_close(a[1], b[1])
    expected = _hand_ensemble(described.text_encoder,
                              ['cat, a small domesticated carnivorous mammal'],
                              TEMPLATES)
    torch.testing.assert_close(b[:1], expected)


def test_cache_in_memory_and_on_disk(tok_dir, tmp_path):
    cache_dir = str(tmp_path / 'cache')
    clf = _classifier(tok_dir, cache_dir=cache_dir).eval()
    counter = EncodeCounter(clf.text_encoder)
    first = clf.class_embeddings()
    assert counter.calls == 1 and len(counter.texts) == 12
    second = clf.class_embeddings()
    assert counter.calls == 1  # memory hit
    torch.testing.assert_close(first, second)
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].startswith('class-')
    assert not [f for f in files if f.endswith('.tmp')]

    # a fresh instance with the same weights reads the disk cache
    fresh = _classifier(tok_dir, cache_dir=cache_dir, seed=1).eval()
    fresh.load_state_dict(clf.state_dict())
    fresh_counter = EncodeCounter(fresh.text_encoder)
    torch.testing.assert_close(fresh.class_embeddings(), first)
    assert fresh_counter.calls == 0

    # different weights: neither cache may answer
    with torch.no_grad():
        weight = fresh.text_encoder.projector.weight
        weight.add_(torch.randn_like(weight))
    changed = fresh.class_embeddings()
    assert fresh_counter.calls == 1
    assert not torch.allclose(changed, first, atol=1e-4)
    assert len(os.listdir(cache_dir)) == 2

    # different templates give a different key too
    other = _classifier(
        tok_dir, cache_dir=cache_dir, templates=TEMPLATES[:2]).eval()
    other.load_state_dict(clf.state_dict())
    other_counter = EncodeCounter(other.text_encoder)
    other.class_embeddings()
    assert other_counter.calls == 1


def test_train_draws_one_random_template_per_class(tok_dir):
    clf = _classifier(tok_dir).train()
    with torch.no_grad():
        per_prompt = F.normalize(
            clf.text_encoder.encode(clf.prompts.texts),
            dim=-1).view(len(CLASS_NAMES), len(TEMPLATES), -1)
    counter = EncodeCounter(clf.text_encoder)
    torch.manual_seed(0)
    steps = [clf.class_embeddings() for _ in range(12)]
    # the frozen encoder ran once over all prompts; steps only index
    assert counter.calls == 1 and len(counter.texts) == 12
    chosen = []
    for embeds in steps:
        # each row is exactly one of its own class's template embeddings
        sims = torch.einsum('cd,ctd->ct', embeds, per_prompt)
        assert torch.allclose(sims.max(1).values, torch.ones(4), atol=1e-5)
        chosen.append(sims.argmax(1))
    chosen = torch.stack(chosen)
    assert len({tuple(c.tolist()) for c in chosen}) > 1  # varies over steps
    assert all(len(set(chosen[:, c].tolist())) > 1 for c in range(4))
    # eval mode averages instead of sampling, from the same prompt cache
    clf.eval()
    torch.testing.assert_close(
        clf.class_embeddings(),
        F.normalize(per_prompt.mean(1), dim=-1),
        rtol=1e-5,
        atol=1e-5)
    assert counter.calls == 1


def test_trainable_encoder_encodes_sampled_prompts_with_grad(tok_dir):
    clf = _classifier(tok_dir, freeze_text_encoder=False)
    assert all(p.requires_grad for p in clf.text_encoder.parameters())
    clf.eval()
    before = clf.class_embeddings()
    clf.train()
    assert clf.text_encoder.training
    counter = EncodeCounter(clf.text_encoder)
    logits = clf(torch.randn(6, 8))
    assert counter.calls == 1 and len(counter.texts) == len(CLASS_NAMES)
    # one prompt of each class, in class order
    for c, text in enumerate(counter.texts):
        assert text in clf.prompts.texts[3 * c:3 * c + 3]
    logits.logsumexp(-1).mean().backward()
    grad = clf.text_encoder.backbone.embeddings.word_embeddings.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # an optimizer step changes the weights: eval embeddings are recomputed
    with torch.no_grad():
        for p in clf.text_encoder.parameters():
            p.sub_(0.5 * p.grad.sign())
    clf.eval()
    counter.calls = 0
    after = clf.class_embeddings()
    assert counter.calls == 1
    assert not torch.allclose(after, before, atol=1e-4)


def test_learned_background(tok_dir):
    clf = _classifier(tok_dir, background=True).eval()
    feats = torch.randn(5, 8)
    logits = clf(feats)
    assert logits.shape == (5, len(CLASS_NAMES) + 1)
    assert clf.all_class_embeddings().shape == (5, 16)
    x = F.normalize(clf.visual_proj(feats), dim=-1)
    expected_bg = x @ F.normalize(clf.bg_embed, dim=-1).t() / 0.05
    torch.testing.assert_close(logits[:, -1:], expected_bg)
    torch.testing.assert_close(logits[:, :-1], clf(feats)[:, :-1])
    F.cross_entropy(logits, torch.full((5, ), 4)).backward()
    assert clf.bg_embed.grad is not None and clf.bg_embed.grad.abs().sum() > 0
    assert 'bg_embed' in clf.state_dict()


def test_learnable_tau(tok_dir):
    clf = _classifier(tok_dir, learnable_tau=True, tau=0.03).eval()
    assert isinstance(clf.logit_scale, torch.nn.Parameter)
    assert clf.tau == pytest.approx(0.03)
    assert 'logit_scale' in clf.state_dict()
    clf(torch.randn(4, 8)).logsumexp(-1).sum().backward()
    assert clf.logit_scale.grad is not None and clf.logit_scale.grad != 0
    with torch.no_grad():
        clf.logit_scale.fill_(math.log(1000.0))
    assert clf.tau == pytest.approx(0.01)  # clamped at max_logit_scale


def test_set_vocabulary_swaps_classes(tok_dir):
    clf = _classifier(tok_dir).eval()
    counter = EncodeCounter(clf.text_encoder)
    clf(torch.randn(2, 8))
    clf.set_vocabulary(['zebra', 'cat'])
    assert clf.num_classes == 2 and clf.class_names == ['zebra', 'cat']
    logits = clf(torch.randn(2, 8))
    assert logits.shape == (2, 2) and counter.calls == 2
    torch.testing.assert_close(
        clf.class_embeddings(),
        _hand_ensemble(clf.text_encoder, ['zebra', 'cat'], TEMPLATES))
    clf.set_vocabulary(['cat'], templates='single')
    assert clf.templates == ['a photo of {}.']
    assert clf.prompts.texts == ['a photo of cat.']


def test_share_borrows_the_text_bank(tok_dir):
    owner = _classifier(tok_dir)
    borrower = _classifier(tok_dir, seed=1, in_channels=4, tau=0.1)
    borrower.share(owner)
    assert borrower.bank is owner.bank and borrower.text_owner is owner
    assert owner.text_owner is None
    # the encoder is registered (state dict, parameters, .to()) once
    assert borrower.text_encoder is None
    assert not [k for k in borrower.state_dict() if 'text_encoder' in k]
    # one bank: the owner's new vocabulary is the borrower's too
    owner.set_vocabulary(['cat', 'dog'], descriptions=False)
    assert borrower.class_names == ['cat', 'dog']
    # a borrower's own vocabulary: its own bank over the same encoder ...
    borrower.set_vocabulary(['zebra'], descriptions=False)
    assert borrower.bank is not owner.bank
    assert borrower.bank.text_encoder is owner.text_encoder
    assert owner.class_names == ['cat', 'dog']
    # ... until it takes the owner's prompts again
    borrower.set_vocabulary(['cat', 'dog'], descriptions=False)
    assert borrower.bank is owner.bank
    # projection and temperature stay per classifier
    owner.eval(), borrower.eval()
    x = torch.randn(3, 4)
    expected = F.normalize(borrower.visual_proj(x), dim=-1) @ \
        owner.class_embeddings().t() / 0.1
    torch.testing.assert_close(borrower(x), expected)
    with pytest.raises(TypeError, match='another TextClassifier'):
        owner.share(owner)


def test_sharing_uses_no_module_internals():
    """Sharing is bank borrowing: no ``object.__setattr__`` to hide a
    module, no edits of ``_modules`` in the text package or the heads."""
    import glob
    root = REPO
    for folder in ('text', 'heads'):
        for path in glob.glob(
                osp.join(root, 'icar_dense', 'models', folder, '*.py')):
            with open(path, encoding='utf-8') as f:
                source = f.read()
            for trick in ('object.__setattr__', '_modules['):
                assert trick not in source, (path, trick)


def test_embeddings_file_roundtrip(tok_dir, tmp_path):
    clf = _classifier(tok_dir, background=True).eval()
    path = str(tmp_path / 'lvis_embeds.pth')
    clf.save_embeddings(path)
    saved = torch.load(path, weights_only=True)
    assert saved['class_names'] == list(CLASS_NAMES)
    assert saved['templates'] == TEMPLATES
    assert len(saved['meta']['weights_sha256']) == 64

    from_file = TextClassifier(
        in_channels=8, embed_dim=16, embeddings=path, background=True)
    assert from_file.text_encoder is None
    from_file.load_state_dict(clf.state_dict(), strict=False)
    feats = torch.randn(3, 8)
    torch.testing.assert_close(from_file.eval()(feats), clf(feats))
    torch.testing.assert_close(from_file.train()(feats), clf(feats))
    # a trained config evaluated with the file keeps its text_encoder entry
    both = TextClassifier(
        in_channels=8,
        embed_dim=16,
        text_encoder=tiny_roberta_encoder_cfg(tok_dir),
        embeddings=path)
    assert both.text_encoder is None and both.class_names == CLASS_NAMES
    # select and reorder classes of the file
    from_file.set_vocabulary(['traffic_light', 'cat'])
    torch.testing.assert_close(from_file.class_embeddings(),
                               clf.class_embeddings()[[3, 0]])
    with pytest.raises(ValueError, match='zebra'):
        from_file.set_vocabulary(['zebra'])
    with pytest.raises(ValueError, match=r'lvis_embeds\.pth holds 16-d'):
        TextClassifier(embed_dim=256, embeddings=path)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        TextClassifier(embed_dim=16, embeddings=str(tmp_path / 'nope.pth'))
    bad = str(tmp_path / 'bad.pth')
    torch.save({'embeddings': torch.zeros(2, 16)}, bad)
    with pytest.raises(ValueError, match=r'bad\.pth must hold'):
        TextClassifier(embed_dim=16, embeddings=bad)


def test_official_icar_checkpoint_loads(tok_dir, tmp_path):
    torch.manual_seed(123)
    reference = RobertaTextEncoder(
        config=tiny_roberta_config(tokenizer_size(tok_dir)),
        tokenizer=tok_dir,
        embed_dim=16)
    # the authors' file as saved: training state and an argparse.Namespace
    # beside 'model', whose text tower (older transformers) has
    # embeddings.position_ids and the unused pooler
    from mmdet.models.backbones import SwinTransformer
    from icar_layout import captured_mm_log, icar_checkpoint
    swin = SwinTransformer(embed_dims=4, depths=(1, 2), num_heads=(1, 1),
                           window_size=3, out_indices=(1, ))
    checkpoint = icar_checkpoint(swin.state_dict(), 1, torch.randn(16, 8),
                                 reference.state_dict())
    model = checkpoint['model']
    assert 'sentence_model.backbone.pooler.dense.weight' in model
    path = str(tmp_path / 'icar_official.pth')
    torch.save(checkpoint, path)

    clf = _classifier(
        tok_dir,
        seed=7,
        init_cfg=dict(
            type='Pretrained', checkpoint=path, prefix='text_classifier.'))
    assert not torch.equal(clf.text_encoder.projector.weight,
                           reference.projector.weight)
    with captured_mm_log() as messages:
        clf.init_weights()
    assert sum("skipped 4 top-level entries" in m for m in messages) == 1
    rebuilt = [m for m in messages if 'rebuilt / unused' in m]
    assert len(rebuilt) == 1 and '1 x position_ids' in rebuilt[0] and \
        '2 x pooler' in rebuilt[0]
    loaded = [m for m in messages if m.startswith('TextClassifier: loaded')]
    assert len(loaded) == 1 and 'unexpected' not in loaded[0]
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(clf.text_encoder.state_dict()[key], value)
    torch.testing.assert_close(clf.visual_proj.weight,
                               model['visual_model.projector.weight'])
    reference.eval()
    torch.testing.assert_close(
        clf.eval().class_embeddings(),
        _hand_ensemble(reference,
                       ['cat', 'dog', 'bow (weapon)', 'traffic light'],
                       TEMPLATES))

    # a decode feature of another width: the projection stays initialised
    narrow = _classifier(
        tok_dir,
        in_channels=12,
        init_cfg=dict(type='Pretrained', checkpoint=path))
    init_proj = narrow.visual_proj.weight.clone()
    narrow.init_weights()
    torch.testing.assert_close(narrow.visual_proj.weight, init_proj)
    torch.testing.assert_close(narrow.text_encoder.projector.weight,
                               reference.projector.weight)

    # the converted layout, selected by prefix
    converted = {
        'text_classifier.' + k: v
        for k, v in clf.state_dict().items()
    }
    converted['backbone.stages.0.weight'] = torch.zeros(1)
    conv_path = str(tmp_path / 'converted.pth')
    torch.save({'meta': {}, 'state_dict': converted}, conv_path)
    other = _classifier(
        tok_dir,
        seed=3,
        init_cfg=dict(
            type='Pretrained', checkpoint=conv_path,
            prefix='text_classifier.'))
    other.init_weights()
    for key, value in clf.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)
    with pytest.raises(KeyError, match='under prefix'):
        _classifier(tok_dir).load_checkpoint(conv_path, prefix='head.')


def test_registry_builds_in_every_host():
    from mmaction.registry import MODELS as ACTION_MODELS
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for registry in (DET_MODELS, SEG_MODELS, ACTION_MODELS):
        for name in ('TextClassifier', 'RobertaTextEncoder',
                     'CLIPTextTransformer'):
            assert registry.get(name) is not None, (registry.scope, name)
    # mmseg's own CLIP text encoder keeps its name
    import mmseg.models  # noqa: F401
    assert SEG_MODELS.get('CLIPTextEncoder').__module__.startswith('mmseg')


# ----------------------------------------------------------------------------
# CLIP tower
# ----------------------------------------------------------------------------
def _openai_clip_state_dict(width=32, layers=2, ctx=16, embed=16):
    g = torch.Generator().manual_seed(0)

    def r(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    sd = {
        'token_embedding.weight': r(49408, width, std=0.02),
        'positional_embedding': r(ctx, width, std=0.01),
        'ln_final.weight': 1 + r(width),
        'ln_final.bias': r(width),
        'text_projection': r(width, embed, std=width**-0.5),
        'logit_scale': torch.tensor(4.6),
        'visual.conv1.weight': r(8, 3, 4, 4),
        'visual.proj': r(8, embed),
    }
    for i in range(layers):
        p = f'transformer.resblocks.{i}.'
        sd.update({
            p + 'attn.in_proj_weight':
            r(3 * width, width, std=width**-0.5),
            p + 'attn.in_proj_bias':
            r(3 * width),
            p + 'attn.out_proj.weight':
            r(width, width, std=width**-0.5),
            p + 'attn.out_proj.bias':
            r(width),
            p + 'ln_1.weight':
            1 + r(width),
            p + 'ln_1.bias':
            r(width),
            p + 'mlp.c_fc.weight':
            r(4 * width, width),
            p + 'mlp.c_fc.bias':
            r(4 * width),
            p + 'mlp.c_proj.weight':
            r(width, 4 * width),
            p + 'mlp.c_proj.bias':
            r(width),
            p + 'ln_2.weight':
            1 + r(width),
            p + 'ln_2.bias':
            r(width),
        })
    return sd


def _reference_clip_text(sd, tokens, heads, layers):
    """OpenAI CLIP's encode_text written out with plain tensor ops."""
    width = sd['ln_final.weight'].shape[0]
    n, length = tokens.shape
    x = sd['token_embedding.weight'][tokens] + sd['positional_embedding']
    mask = torch.full((length, length), float('-inf')).triu(1)
    for i in range(layers):
        p = f'transformer.resblocks.{i}.'
        h = F.layer_norm(x, (width, ), sd[p + 'ln_1.weight'],
                         sd[p + 'ln_1.bias'])
        q, k, v = (h @ sd[p + 'attn.in_proj_weight'].t() +
                   sd[p + 'attn.in_proj_bias']).chunk(
                       3, dim=-1)
        q, k, v = (
            t.view(n, length, heads, -1).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask)
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
        x = x + out @ sd[p + 'attn.out_proj.weight'].t() + \
            sd[p + 'attn.out_proj.bias']
        h = F.layer_norm(x, (width, ), sd[p + 'ln_2.weight'],
                         sd[p + 'ln_2.bias'])
        h = h @ sd[p + 'mlp.c_fc.weight'].t() + sd[p + 'mlp.c_fc.bias']
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + 'mlp.c_proj.weight'].t() + sd[p + 'mlp.c_proj.bias']
    x = F.layer_norm(x, (width, ), sd['ln_final.weight'], sd['ln_final.bias'])
    x = x[torch.arange(n), tokens.argmax(dim=-1)]
    return x @ sd['text_projection']


def test_clip_tokenizer_is_clip_bpe():
    clip = CLIPTextTransformer(**{
        k: v
        for k, v in tiny_clip_cfg().items() if k != 'type'
    })
    tokens = clip.tokenize(['a photo of a cat.', 'A Photo of a CAT.'])
    # OpenAI clip.tokenize('a photo of a cat.')
    expected = [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert tokens.tolist() == [expected, expected]
    long = clip.tokenize([' '.join(['cat'] * 50)])
    assert long.shape == (1, 16) and long[0, -1].item() == 49407


def test_clip_loads_openai_layout(tmp_path):
    from mmseg.utils.tokenizer import tokenize
    sd = _openai_clip_state_dict()
    path = str(tmp_path / 'clip_tiny.pt')
    torch.save(sd, path)
    clip = CLIPTextTransformer(pretrained=path, heads=2).eval()
    assert clip.context_length == 16 and clip.embed_dim == 16
    assert len(clip.transformer.resblocks) == 2
    texts = ['a photo of a cat.', 'a bad photo of the bow (weapon).', 'dog']
    with torch.no_grad():
        ours = clip.encode(texts)
        # reference on mmseg's own tokenize, padded to the full context
        expected = _reference_clip_text(sd, tokenize(texts, 16), 2, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)

    # open_clip layouts: DDP prefix and a linear text projection
    variant = {'module.' + k: v for k, v in sd.items()}
    variant['module.text_projection.weight'] = \
        variant.pop('module.text_projection').t()
    other = CLIPTextTransformer(**{
        k: v
        for k, v in tiny_clip_cfg().items() if k != 'type'
    }).eval()
    other.load_clip_state_dict(variant)
    with torch.no_grad():
        torch.testing.assert_close(other.encode(texts), ours)
    assert 'visual.proj' not in clip_text_state_dict(sd)
    with pytest.raises(ValueError, match='do not fit'):
        CLIPTextTransformer(**{
            k: v
            for k, v in tiny_clip_cfg(embed_dim=8).items() if k != 'type'
        }).load_clip_state_dict(sd)


def test_clip_tower_in_classifier(tmp_path):
    clf = TextClassifier(
        in_channels=8,
        embed_dim=16,
        text_encoder=tiny_clip_cfg(),
        vocabulary=['cat', 'bow_(weapon)'],
        templates='imagenet80',
        cache_dir=str(tmp_path)).eval()
    assert len(clf.prompts.texts) == 160
    assert 'a bad photo of a bow (weapon).' in clf.prompts.texts
    logits = clf(torch.randn(3, 8))
    assert logits.shape == (3, 2)
    torch.testing.assert_close(
        clf.class_embeddings(),
        _hand_ensemble(clf.text_encoder, ['cat', 'bow (weapon)'],
                       clf.templates))
    with pytest.raises(ValueError, match='outputs 16-d'):
        TextClassifier(
            embed_dim=256, text_encoder=tiny_clip_cfg(), vocabulary=['cat'])


# ----------------------------------------------------------------------------
# distributed
# ----------------------------------------------------------------------------
def _dist_worker(rank, world_size, init_file, tok_dir, state_path, out_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo',
        store=dist.FileStore(init_file, world_size),
        rank=rank,
        world_size=world_size)
    try:
        state = torch.load(state_path, weights_only=True)
        result = {}

        frozen = _classifier(tok_dir, shard_min_prompts=1)
        frozen.load_state_dict(state)
        counter = EncodeCounter(frozen.text_encoder)
        result['eval'] = frozen.eval().class_embeddings()
        result['eval_texts'] = list(counter.texts)

        trainable = _classifier(
            tok_dir,
            templates='single',
            freeze_text_encoder=False,
            shard_min_prompts=1)
        trainable.load_state_dict(state)
        trainable.train()
        embeds = trainable.class_embeddings()
        target = torch.randn(
            embeds.shape, generator=torch.Generator().manual_seed(0))
        (embeds * target).sum().backward()
        grads = {}
        for name, p in trainable.text_encoder.named_parameters():
            # what DDP does with the gradients: average over ranks
            dist.all_reduce(p.grad)
            grads[name] = p.grad / world_size
        result['train'] = embeds.detach()
        result['grads'] = grads

        # random templates drawn with a different seed on each rank: the
        # gathered class embeddings must still agree across ranks
        torch.manual_seed(100 + rank)
        sampled = _classifier(
            tok_dir, freeze_text_encoder=False, shard_min_prompts=1)
        sampled.load_state_dict(state)
        result['sampled'] = torch.stack(
            [sampled.train().class_embeddings().detach() for _ in range(4)])
        torch.save(result, osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_sharded_encoding_matches_single_process(tok_dir, tmp_path):
    import torch.multiprocessing as mp
    reference = _classifier(tok_dir, shard_min_prompts=1)
    state_path = str(tmp_path / 'state.pth')
    torch.save(reference.state_dict(), state_path)
    expected_eval = reference.eval().class_embeddings()

    single = _classifier(
        tok_dir, templates='single', freeze_text_encoder=False)
    single.load_state_dict(reference.state_dict())
    embeds = single.train().class_embeddings()
    target = torch.randn(
        embeds.shape, generator=torch.Generator().manual_seed(0))
    (embeds * target).sum().backward()

    # fork: the workers inherit the imported OpenMMLab stack instead of
    # importing it again (seconds per process on a small CI machine)
    method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
    mp.start_processes(
        _dist_worker,
        args=(2, str(tmp_path / 'store'), tok_dir, state_path, str(tmp_path)),
        nprocs=2,
        start_method=method)
    results = [
        torch.load(str(tmp_path / f'rank{r}.pth'), weights_only=True)
        for r in range(2)
    ]
    prompts = reference.prompts.texts
    # each rank encoded one contiguous half of the 12 prompts
    assert results[0]['eval_texts'] == prompts[:6]
    assert results[1]['eval_texts'] == prompts[6:]
    torch.testing.assert_close(results[0]['sampled'], results[1]['sampled'])
    with torch.no_grad():
        per_prompt = F.normalize(
            reference.text_encoder.encode(prompts), dim=-1).view(4, 3, -1)
    for step in results[0]['sampled']:
        sims = torch.einsum('cd,ctd->ct', step, per_prompt)
        torch.testing.assert_close(sims.max(1).values, torch.ones(4))
    for res in results:
        torch.testing.assert_close(res['eval'], expected_eval)
        torch.testing.assert_close(res['train'], embeds.detach())
        for name, p in single.text_encoder.named_parameters():
            torch.testing.assert_close(
                res['grads'][name], p.grad, rtol=1e-4, atol=1e-6)


def test_fixed_tau_is_not_clamped(tok_dir):
    """max_logit_scale bounds a learned 1 / tau only: a fixed tau below
    1 / max_logit_scale is used as given."""
    assert _classifier(tok_dir, tau=0.005).tau == pytest.approx(0.005)
    learned = _classifier(tok_dir, tau=0.005, learnable_tau=True)
    assert learned.tau == pytest.approx(0.01)


def test_fit_checkpoint_weights(tok_dir, tmp_path):
    """What every task's iCAR loader keeps of the text weights: no legacy
    RoBERTa keys, no text tower for an embeddings-file classifier, nothing
    of the wrong shape."""
    with_tower = _classifier(tok_dir).eval()
    state = dict(with_tower.state_dict())
    state['text_encoder.backbone.pooler.dense.weight'] = torch.zeros(2, 2)
    state['visual_proj.weight'] = torch.zeros(16, 4)  # trained on 4-d
    kept, notes = with_tower.fit_checkpoint_weights(state)
    assert 'text_encoder.backbone.pooler.dense.weight' not in kept
    assert 'visual_proj.weight' not in kept
    assert any('visual_proj.weight (16, 4) does not fit (16, 8)' in n
               for n in notes)
    assert any(k.startswith('text_encoder.') for k in kept)

    path = str(tmp_path / 'embeds.pth')
    with_tower.save_embeddings(path)
    from_file = TextClassifier(in_channels=8, embed_dim=16, embeddings=path)
    kept, notes = from_file.fit_checkpoint_weights(state)
    assert not any(k.startswith('text_encoder.') for k in kept)
    assert 'text tower weights ignored' in ' '.join(notes)
