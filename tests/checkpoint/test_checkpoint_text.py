"""The text classifier's checkpoint logic in ``icar_dense.checkpoint.text``.

The functions hold what ``TextClassifier.load_checkpoint`` /
``fit_checkpoint_weights`` / ``convert_icar_text_classifier`` do; each is
checked on its own and against the classifier on the same file (same
tensors loaded, same log line, same errors).
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers_text import CLASS_NAMES, tiny_roberta_encoder_cfg  # noqa: E402
from icar_layout import captured_mm_log, icar_checkpoint  # noqa: E402
from mmdet.models.backbones import SwinTransformer  # noqa: E402

import icar_dense  # noqa: F401,E402
from icar_dense.checkpoint import (  # noqa: E402
    LEGACY_TEXT_KEYS, convert_icar_text_classifier,
    filter_text_classifier_state, fit_text_classifier_state,
    load_text_classifier_state, read_text_classifier_checkpoint)
from icar_dense.models.text import TextClassifier  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')


def _classifier(tok_dir, seed=0, **kwargs):
    torch.manual_seed(seed)
    cfg = dict(in_channels=8, embed_dim=16,
               text_encoder=tiny_roberta_encoder_cfg(tok_dir),
               vocabulary=list(CLASS_NAMES), templates=['a {}.'])
    cfg.update(kwargs)
    return TextClassifier(**cfg)


@pytest.fixture(scope='module')
def official(tok_dir, tmp_path_factory):
    """An official iCAR file with a tiny Swin (width 8 after the last
    stage) and the tower of another classifier (seed 1)."""
    torch.manual_seed(0)
    swin = SwinTransformer(embed_dims=8, depths=(1, 1), num_heads=(1, 1),
                           window_size=2, out_indices=(1, ))
    source = _classifier(tok_dir, seed=1)
    tower = source.text_encoder.state_dict()
    path = str(tmp_path_factory.mktemp('icar') / 'icar.pth')
    torch.save(icar_checkpoint(swin.state_dict(), 1,
                               visual_proj=torch.randn(16, 16),
                               text_state_dict=tower), path)
    return path, source


def test_convert_matches_the_classifier_module(official):
    from icar_dense.models import text
    model = torch.load(official[0], weights_only=False)['model']
    ours, theirs = [], []
    converted = convert_icar_text_classifier(model, ours)
    expected = text.convert_icar_text_classifier(model, theirs)
    assert list(converted) == list(expected) and ours == theirs
    assert ours and all(k.startswith('sentence_model.') for k in ours)
    assert 'visual_proj.weight' in converted
    assert not any(k.startswith(LEGACY_TEXT_KEYS) for k in converted)


def test_fit_state_equals_fit_checkpoint_weights(tok_dir):
    classifier = _classifier(tok_dir).eval()
    state = dict(classifier.state_dict())
    state['text_encoder.backbone.pooler.dense.weight'] = torch.zeros(2, 2)
    state['visual_proj.weight'] = torch.zeros(16, 4)  # trained on 4-d
    for has_tower in (True, False):
        rebuilt = []
        kept, notes = fit_text_classifier_state(
            state, classifier.state_dict(), has_tower, rebuilt)
        assert rebuilt == ['text_encoder.backbone.pooler.dense.weight']
        assert 'visual_proj.weight' not in kept
        assert any('(16, 4) does not fit (16, 8)' in n for n in notes)
        towers = [k for k in kept if k.startswith('text_encoder.')]
        assert bool(towers) == has_tower
        assert ('text tower weights ignored' in ' '.join(notes)) != has_tower
    kept, notes = fit_text_classifier_state(state, classifier.state_dict())
    expected_kept, expected_notes = classifier.fit_checkpoint_weights(state)
    assert list(kept) == list(expected_kept) and notes == expected_notes
    assert all(kept[k] is expected_kept[k] for k in kept)


def test_read_and_load_equal_load_checkpoint(tok_dir, official):
    path, source = official
    by_method = _classifier(tok_dir, seed=2)
    by_functions = _classifier(tok_dir, seed=2)
    with captured_mm_log() as method_log:
        by_method.load_checkpoint(path)
    with captured_mm_log() as function_log:
        state, layout, rebuilt = read_text_classifier_checkpoint(path)
        load_text_classifier_state(by_functions, state, path, layout,
                                   rebuilt)
    assert layout == 'official iCAR'
    assert rebuilt and all('pooler' in k or 'position_ids' in k
                           for k in rebuilt)
    assert function_log == method_log
    assert any('TextClassifier: loaded' in m for m in function_log)
    assert any('rebuilt / unused' in m for m in function_log)
    for key, value in by_method.state_dict().items():
        torch.testing.assert_close(by_functions.state_dict()[key], value)
    torch.testing.assert_close(
        by_functions.text_encoder.state_dict()['projector.weight'],
        source.text_encoder.state_dict()['projector.weight'])


def test_converted_file_and_its_errors(tok_dir, tmp_path):
    classifier = _classifier(tok_dir)
    path = str(tmp_path / 'converted.pth')
    torch.save({'state_dict': {'head.' + k: v for k, v in
                               classifier.state_dict().items()}}, path)
    state, layout, _ = read_text_classifier_checkpoint(path, prefix='head.')
    assert layout == 'converted' and set(state) == set(
        classifier.state_dict())
    with pytest.raises(KeyError, match="under prefix 'other.'"):
        read_text_classifier_checkpoint(path, prefix='other.')
    with pytest.raises(KeyError, match='under prefix'):
        classifier.load_checkpoint(path, prefix='other.')

    own = classifier.state_dict()
    bad = dict(state)
    key = next(k for k in own if k.startswith('text_encoder.')
               and own[k].dim() == 2)
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match='does not fit this TextClassifier'):
        filter_text_classifier_state(bad, own, path, 'converted')

    plan = filter_text_classifier_state(state, own, path, 'converted',
                                        shares_encoder=True)
    assert plan.shared_keys == sum(1 for k in own
                                   if k.startswith('text_encoder.'))
    assert not any(k.startswith('text_encoder.') for k in plan.state)
    plan = filter_text_classifier_state(state, own, path, 'converted',
                                        has_tower=False)
    assert plan.shared_keys == 0 and 'embeddings file' in plan.notes[0]
