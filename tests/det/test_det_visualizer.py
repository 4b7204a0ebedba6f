"""OVDetLocalVisualizer: a prediction panel is never silently empty."""
import numpy as np
import pytest
import torch

import icar_dense  # noqa: F401


def _sample(scores):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    pred = InstanceData()
    n = len(scores)
    pred.bboxes = torch.tensor([[10. + 20 * i, 10., 25. + 20 * i, 40.]
                                for i in range(n)])
    pred.scores = torch.tensor(scores)
    pred.labels = torch.arange(n) % 2
    sample = DetDataSample()
    sample.pred_instances = pred
    return sample


def _draw(vis, sample, thr=0.3):
    image = np.full((64, 128, 3), 128, np.uint8)
    vis.add_datasample('x', image, data_sample=sample, draw_gt=False,
                       pred_score_thr=thr)
    return image, vis.get_image()


@pytest.fixture
def visualizer(request):
    from icar_dense.engine.det_vis import OVDetLocalVisualizer
    vis = OVDetLocalVisualizer(name=f'test_vis_{request.node.name}')
    vis.dataset_meta = dict(classes=('cat', 'dog'),
                            palette=[(255, 0, 0), (0, 255, 0)])
    return vis


def test_low_scores_draw_the_top_k_with_the_rule(visualizer, monkeypatch):
    texts = []
    draw_texts = type(visualizer).draw_texts

    def recording(self, text, *args, **kwargs):
        texts.append(text)
        return draw_texts(self, text, *args, **kwargs)

    monkeypatch.setattr(type(visualizer), 'draw_texts', recording)
    image, drawn = _draw(visualizer, _sample([0.01, 0.05, 0.02, 0.04]))
    # boxes were drawn although no score clears 0.3 (stock mmdet: none)
    assert (drawn != image).any()
    assert 'no score > 0.30: top 3 shown' in texts
    # the three best (0.05, 0.04, 0.02) carry their scores in the labels
    labels = [t for t in texts if ':' in t and 'score' not in t]
    assert len(labels) == 3


def test_scores_above_threshold_are_drawn_as_in_mmdet(visualizer,
                                                      monkeypatch):
    texts = []
    draw_texts = type(visualizer).draw_texts
    monkeypatch.setattr(
        type(visualizer), 'draw_texts',
        lambda self, text, *a, **k: texts.append(text) or draw_texts(
            self, text, *a, **k))
    _draw(visualizer, _sample([0.9, 0.05, 0.6]))
    assert 'score > 0.30: 2 shown' in texts
    assert len([t for t in texts if 'score' not in t]) == 2


def test_fallback_can_be_turned_off(visualizer):
    visualizer.fallback_topk = 0
    visualizer.caption = False
    image, drawn = _draw(visualizer, _sample([0.01, 0.02]))
    assert (drawn == image).all()  # mmdet's behaviour: nothing drawn
    from icar_dense.engine.det_vis import OVDetLocalVisualizer
    with pytest.raises(ValueError, match='fallback_topk'):
        OVDetLocalVisualizer(name='bad_vis', fallback_topk=-1)


def test_det_configs_use_it():
    import glob
    import os.path as osp

    from mmengine.config import Config

    from conftest import REPO
    for path in glob.glob(osp.join(REPO, 'configs', 'det', '*.py')):
        cfg = Config.fromfile(path)
        assert cfg.visualizer.type == 'OVDetLocalVisualizer', path
