"""Language decode heads, the segmentor that links them, iCAR loading."""
import os
import os.path as osp
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from data_factory import colour_labels, load_photo  # noqa: E402
from helpers_text import tiny_roberta_encoder_cfg  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from conftest import REPO  # noqa: E402
from helpers_seg import (CLASSES, EMBED_DIM, TINY_SWIN,  # noqa
                         WIDTHS, make_icar_checkpoint, make_tokenizer)

import icar_dense  # noqa: E402,F401
# mmengine's load_checkpoint reading local files through the safe loader
# (the authors' files hold an argparse.Namespace next to the weights)
from icar_dense.checkpoint import load_checkpoint  # noqa: E402
from icar_dense.models.heads import ICARFCNHead, ICAREncoderDecoder  # noqa
from icar_dense.models.text import TextClassifier  # noqa: E402

BN = dict(type='BN', requires_grad=True)


# one torch thread: tests/conftest.py
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
    return make_tokenizer(str(tmp_path_factory.mktemp('seg_tok')))


@pytest.fixture(scope='module')
def icar(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp('seg_icar')
    return make_icar_checkpoint(folder / 'icar_official.pth', tok)


def _text_classifier(tok, vocabulary=CLASSES, **kwargs):
    cfg = dict(
        type='TextClassifier',
        embed_dim=EMBED_DIM,
        text_encoder=tiny_roberta_encoder_cfg(tok, embed_dim=EMBED_DIM),
        vocabulary=list(vocabulary),
        templates=['a photo of a {}.', 'a sketch of the {}.'])
    cfg.update(kwargs)
    return cfg


def upernet_cfg(tok, num_classes=len(CLASSES), aux_classes=None, unseen=(),
                vocabulary=CLASSES, icar_path=None):
    backbone = dict(type='ICARSwinTransformer', **TINY_SWIN)
    tc = _text_classifier(tok, vocabulary)
    if icar_path:
        backbone['init_cfg'] = dict(type='Pretrained', checkpoint=icar_path)
        tc['init_cfg'] = dict(type='Pretrained', checkpoint=icar_path)
    return dict(
        type='ICAREncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            size=(32, 32),
            pad_val=0,
            seg_pad_val=255),
        backbone=backbone,
        decode_head=dict(
            type='ICARUPerHead',
            in_channels=WIDTHS,
            in_index=[0, 1, 2, 3],
            channels=16,
            num_classes=num_classes,
            norm_cfg=BN,
            text_classifier=tc,
            unseen_classes=list(unseen),
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        auxiliary_head=dict(
            type='ICARFCNHead',
            in_channels=WIDTHS[2],
            in_index=2,
            channels=8,
            num_convs=1,
            concat_input=False,
            num_classes=num_classes if aux_classes is None else aux_classes,
            norm_cfg=BN,
            text_classifier='decode_head',
            unseen_classes=list(unseen),
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def zeroshot_cfg(tok, icar_path):
    return dict(
        type='ICAREncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.2524, 117.2038, 104.5019],
            std=[68.7692, 66.8935, 70.5989],
            bgr_to_rgb=True),
        backbone=dict(
            type='ICARSwinTransformer',
            **TINY_SWIN,
            out_indices=(3, ),
            init_cfg=dict(type='Pretrained', checkpoint=icar_path)),
        decode_head=dict(
            type='ICARFCNHead',
            in_channels=WIDTHS[-1],
            in_index=0,
            channels=WIDTHS[-1],
            num_convs=0,
            concat_input=False,
            dropout_ratio=0.,
            num_classes=len(CLASSES),
            text_classifier=_text_classifier(
                tok,
                in_channels=WIDTHS[-1],
                init_cfg=dict(type='Pretrained', checkpoint=icar_path))),
        test_cfg=dict(mode='whole'))


def build(cfg):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(ConfigDict(cfg))


def photo_batch(size=32, count=2):
    """Real photos with colour-cluster labels (0..4), as a model batch."""
    inputs, samples = [], []
    for i in range(count):
        image = load_photo(i, (size, size))
        label = colour_labels(image, len(CLASSES))
        inputs.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        sample = SegDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                          pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.from_numpy(label.astype(np.int64))[None])
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ----------------------------------------------------------------------------
def test_conv_seg_replaced_and_text_tower_shared(tok):
    model = build(upernet_cfg(tok))
    keys = list(model.state_dict())
    assert not [k for k in keys if 'conv_seg' in k]
    assert model.state_dict()['decode_head.text_classifier.visual_proj.weight'
                              ].shape == (EMBED_DIM, 16)
    assert model.state_dict()['auxiliary_head.visual_proj.weight'].shape == (
        EMBED_DIM, 8)
    # one text tower in the whole segmentor, listed once
    assert not [k for k in keys if k.startswith('auxiliary_head.text_')]
    towers = [m for m in model.modules() if type(m).__name__ == 'RobertaModel']
    assert len(towers) == 1
    assert model.auxiliary_head.classifier is model.decode_head.text_classifier
    # what the auxiliary head borrows: the decode head's text bank
    assert model.auxiliary_head.text_bank is \
        model.decode_head.text_classifier.bank
    assert len({id(p) for p in model.parameters()}) == len(
        list(model.parameters()))

    # both heads: cosine(projection(pixel), class text) / tau, per pixel
    model.eval()
    tc = model.decode_head.text_classifier
    text = F.normalize(tc.class_embeddings(), dim=-1)
    for head, channels in ((model.decode_head, 16), (model.auxiliary_head,
                                                     8)):
        feat = torch.randn(2, channels, 5, 7)
        proj = (tc.visual_proj if head is model.decode_head else
                head.visual_proj).weight
        pixels = F.normalize(torch.einsum('ec,nchw->nhwe', proj, feat), dim=-1)
        expected = torch.einsum('nhwe,ke->nkhw', pixels, text) / 0.05
        torch.testing.assert_close(head.cls_seg(feat), expected)
    # Dropout2d (dropout_ratio) acts in training only
    head = model.decode_head.train()
    feat = torch.randn(1, 16, 4, 4)
    assert not torch.equal(head.cls_seg(feat), head.cls_seg(feat))


def test_vocabulary_size_mismatch_errors(tok):
    with pytest.raises(ValueError, match=r'num_classes=150 .*has 5 classes'):
        build(upernet_cfg(tok, num_classes=150))
    # the auxiliary head is checked against the shared classifier
    with pytest.raises(ValueError, match=r'ICARFCNHead: num_classes=7'):
        build(upernet_cfg(tok, aux_classes=7))
    with pytest.raises(ValueError, match=r"\['dog'\] are not among"):
        build(upernet_cfg(tok, unseen=['dog']))
    # a sharing head that was never linked says what to do
    from mmseg.registry import MODELS
    head = MODELS.build(
        dict(type='ICARFCNHead', in_channels=8, channels=8, num_convs=1,
             num_classes=5, text_classifier='decode_head'))
    with pytest.raises(RuntimeError, match='ICAREncoderDecoder'):
        head.cls_seg(torch.randn(1, 8, 2, 2))


def test_set_vocabulary_retargets_every_head(tok):
    model = build(upernet_cfg(tok))
    model.set_vocabulary(['tree', 'wall', 'dog'])
    assert model.num_classes == model.out_channels == 3
    assert model.auxiliary_head.num_classes == 3
    assert model.class_names == ['tree', 'wall', 'dog']
    model.eval()
    batch = photo_batch(count=1)
    model.test_cfg = ConfigDict(mode='slide', crop_size=(24, 24),
                                stride=(16, 16))
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        out = model(**data, mode='predict')
    assert out[0].seg_logits.data.shape == (3, 32, 32)
    assert out[0].pred_sem_seg.data.max() < 3


def test_training_decreases_loss_on_fixed_batch(tok, tmp_path):
    # frozen cached class embeddings (TextClassifier(embeddings=...)): random
    # 256-d vectors are about as far apart as real class-name embeddings,
    # unlike those of a random tiny RoBERTa (cosine ~0.98 with each other)
    torch.manual_seed(1)
    path = str(tmp_path / 'embeddings.pth')
    torch.save(dict(class_names=list(CLASSES),
                    embeddings=torch.randn(len(CLASSES), EMBED_DIM)), path)
    cfg = upernet_cfg(tok)
    cfg['decode_head']['text_classifier'] = dict(
        type='TextClassifier', embed_dim=EMBED_DIM, embeddings=path)
    model = build(cfg)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(photo_batch(), True)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=3e-3)
    history = []
    for _ in range(15):
        losses = model(**data, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optim.zero_grad()
        loss.backward()
        optim.step()
        history.append(loss.item())
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    assert last < 0.8 * first, history
    # both projections learned
    assert model.decode_head.text_classifier.visual_proj.weight.grad.abs(
    ).sum() > 0
    assert model.auxiliary_head.visual_proj.weight.grad.abs().sum() > 0


def test_fine_tuned_text_encoder_learns_from_both_heads(tok):
    cfg = upernet_cfg(tok)
    cfg['decode_head']['text_classifier']['freeze_text_encoder'] = False
    model = build(cfg)
    model.train()
    data = model.data_preprocessor(photo_batch(), True)
    losses = model(**data, mode='loss')
    encoder = model.decode_head.text_classifier.text_encoder
    grads = []
    for key in ('decode.loss_ce', 'aux.loss_ce'):
        encoder.zero_grad()
        losses[key].backward(retain_graph=True)
        grads.append(encoder.projector.weight.grad.abs().sum().item())
    assert all(g > 0 for g in grads), grads
    # the frozen default: no gradient and no trainable text parameter
    frozen = build(upernet_cfg(tok))
    assert not any(p.requires_grad for p in
                   frozen.decode_head.text_classifier.text_encoder
                   .parameters())


def test_unseen_classes_take_no_part_in_the_loss(tok):
    model = build(upernet_cfg(tok, unseen=['sky']))
    head = model.decode_head
    sky = CLASSES.index('sky')
    batch = photo_batch(size=16, count=1)
    label = batch['data_samples'][0].gt_sem_seg.data
    assert (label == sky).any()  # the photo has sky pixels
    logits = torch.randn(1, len(CLASSES), 16, 16, requires_grad=True)
    loss = head.loss_by_feat(logits, batch['data_samples'])['loss_ce']
    loss.backward()
    # no gradient reaches the unseen class's logits ...
    assert logits.grad[:, sky].abs().max() == 0
    assert logits.grad[:, [i for i in range(5) if i != sky]].abs().sum() > 0
    # ... and the loss is the cross-entropy over the seen classes, unseen
    # pixels ignored (mmseg's mean over all pixels)
    seen = [i for i in range(5) if i != sky]
    remap = torch.full((256, ), 255, dtype=torch.long)
    remap[seen] = torch.arange(len(seen))
    target = remap[label[0].long()][None]
    expected = F.cross_entropy(
        logits.detach()[:, seen], target, ignore_index=255,
        reduction='none').mean()
    torch.testing.assert_close(loss.detach(), expected)
    # prediction still scores every class
    model.eval()
    assert model.decode_head.cls_seg(torch.randn(1, 16, 3, 3)).shape[1] == 5


def _reference_zero_shot(icar, tok, image):
    """Zero-shot logits computed from the checkpoint's parts by hand."""
    from icar_dense.models.backbones import ICARSwinTransformer
    swin = ICARSwinTransformer(**TINY_SWIN, out_indices=(3, ))
    swin.load_state_dict(icar['swin'], strict=False)
    tc = TextClassifier(**{
        k: v
        for k, v in _text_classifier(tok, in_channels=WIDTHS[-1]).items()
        if k != 'type'
    })
    tc.text_encoder.load_state_dict(icar['text'])
    tc.eval()
    mean = torch.tensor([123.2524, 117.2038, 104.5019]).view(1, 3, 1, 1)
    std = torch.tensor([68.7692, 66.8935, 70.5989]).view(1, 3, 1, 1)
    x = (image.flip(1).float() - mean) / std  # BGR -> RGB
    with torch.no_grad():
        feat = swin.eval()(x)[0]
        pixels = F.normalize(
            torch.einsum('ec,nchw->nhwe', icar['proj'], feat), dim=-1)
        text = tc.class_embeddings()
        logits = torch.einsum('nhwe,ke->nkhw', pixels, text) / 0.05
    return F.interpolate(logits, size=image.shape[-2:], mode='bilinear',
                         align_corners=False)


def test_zero_shot_segmenter_is_icar_per_pixel(tok, icar, tmp_path):
    batch = photo_batch(count=1)
    expected = _reference_zero_shot(icar, tok, batch['inputs'][0][None])

    def predict(model):
        model.eval()
        with torch.no_grad():
            data = model.data_preprocessor(batch, False)
            return model(**data, mode='predict')[0].seg_logits.data[None]

    # (1) init_cfg: backbone and text classifier read the official file
    model = build(zeroshot_cfg(tok, icar['path']))
    model.init_weights()
    torch.testing.assert_close(
        model.decode_head.text_classifier.visual_proj.weight, icar['proj'])
    torch.testing.assert_close(predict(model), expected, rtol=1e-4,
                               atol=1e-4)
    # (2) the official file as a test checkpoint (tools/test.py, demo) ...
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from convert_icar import convert
    converted = str(tmp_path / 'converted.pth')
    convert(icar['path'], converted)
    for path in (icar['path'], converted):  # ... or the converted one
        model = build(zeroshot_cfg(tok, '/nonexistent.pth'))
        load_checkpoint(model, path, map_location='cpu')
        torch.testing.assert_close(predict(model), expected, rtol=1e-4,
                                   atol=1e-4)


def test_upernet_reads_icar_checkpoint_without_misfit_projection(tok, icar):
    model = build(upernet_cfg(tok))
    before = model.decode_head.text_classifier.visual_proj.weight.clone()
    load_checkpoint(model, icar['path'], map_location='cpu')
    sd = model.state_dict()
    # 512-channel-style decode feature (16 here) != backbone width (128):
    # the projection keeps its initialisation; the rest is iCAR's
    assert torch.equal(sd['decode_head.text_classifier.visual_proj.weight'],
                       before)
    torch.testing.assert_close(
        sd['decode_head.text_classifier.text_encoder.projector.weight'],
        icar['text']['projector.weight'])
    torch.testing.assert_close(sd['backbone.stages.2.blocks.0.ffn.layers.1.'
                                  'weight'],
                               icar['swin']['stages.2.blocks.0.ffn.layers.1.'
                                            'weight'])
    torch.testing.assert_close(sd['backbone.norm3.weight'],
                               icar['swin']['norm3.weight'])
    # our own checkpoints still load the ordinary way
    model2 = build(upernet_cfg(tok))
    model2.load_state_dict(model.state_dict())
    assert torch.equal(model2.state_dict()['backbone.norm3.weight'],
                       sd['backbone.norm3.weight'])
    assert isinstance(model, ICAREncoderDecoder)


def test_icar_file_buffers_are_rebuilt_not_missing(tok, icar):
    """The authors' file as saved, as a test checkpoint (``load_from``,
    demo): training state skipped in one line, the authors' buffers and
    unused weights in one "rebuilt / unused" line, none of them (nor the
    relative position indices) in mmengine's missing / unexpected list."""
    from icar_layout import captured_mm_log
    model = build(upernet_cfg(tok))
    with captured_mm_log() as messages:
        load_checkpoint(model, icar['path'], map_location='cpu')
    assert sum("using its 'model' entry" in m for m in messages) == 1
    rebuilt = [m for m in messages if 'rebuilt / unused' in m]
    assert len(rebuilt) == 1
    for name in ('relative_coords', 'atten_mask_matrix', 'pos_embed',
                 'position_ids', 'pooler'):
        assert name in rebuilt[0], (name, rebuilt[0])
    layout = [m for m in messages if 'official iCAR layout' in m]
    assert len(layout) == 1 and 'norm0..norm2' in layout[0]
    for message in messages:
        for word in ('unexpected key', 'missing keys'):
            if word in message:
                tail = message[message.index(word):]
                for name in ('relative_position_index', 'atten_mask_matrix',
                             'pos_embed', 'pooler', 'position_ids', 'args'):
                    assert name not in tail, (name, message)
    assert isinstance(model.auxiliary_head, ICARFCNHead)
