"""The InMaP test loop knows no task: a fourth one plugs in by registering a
feature collector (``INMAP_COLLECTORS``), and the options are checked once,
with the same words as the learning itself."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from torch.utils.data import DataLoader, Dataset

import icar_dense  # noqa: F401
from icar_dense.inmap import (INMAP_COLLECTORS, BaseFeatureCollector,
                              InMaPTestLoop, enable_inmap,
                              learn_vision_proxies, loop_options)
from icar_dense.inmap.checks import check_optional_int

# one torch thread: tests/conftest.py
pytestmark = pytest.mark.usefixtures('one_thread')

NUM_CLASSES, DIM, TOKENS, SAMPLES = 3, 8, 4, 24


class ToyCollector(BaseFeatureCollector):
    """A fourth task: the first ``toy_tokens`` tokens of every sample."""

    default_scope = 'icar_toy'
    options = dict(toy_tokens=2)

    @classmethod
    def check_options(cls, options):
        check_optional_int('toy_tokens', options['toy_tokens'], 1)

    def select(self, name, module, feats, logits):
        ids = torch.arange(feats.shape[0]).repeat_interleave(self.toy_tokens)
        rows = feats[:, :self.toy_tokens].reshape(-1, feats.shape[-1])
        return module.embed_visual(rows), ids, None


@pytest.fixture
def toy_task():
    INMAP_COLLECTORS.register_module(name='toy', module=ToyCollector)
    yield 'toy'
    INMAP_COLLECTORS.module_dict.pop('toy')


class ToyClassifier(torch.nn.Module):
    """What InMaP calls on a text classifier, and nothing else."""

    def __init__(self, text):
        super().__init__()
        self.register_buffer('text', F.normalize(text, dim=1))
        self.num_classes, self.embed_dim = text.shape
        self.class_names = [f'class{i}' for i in range(self.num_classes)]
        self.bg_embed = None
        self.class_proxies = None

    def set_class_proxies(self, proxies):
        self.class_proxies = None if proxies is None else F.normalize(
            proxies.float(), dim=1)

    def all_class_embeddings(self):
        return self.text if self.class_proxies is None else \
            self.class_proxies

    def embed_visual(self, feats):
        return F.normalize(feats, dim=-1)

    def forward(self, feats):
        return self.embed_visual(feats) @ self.all_class_embeddings().t()


class ToyModel(BaseModel):

    def __init__(self, text):
        super().__init__()
        self.head = ToyClassifier(text)

    def forward(self, inputs, data_samples=None, mode='predict'):
        scores = self.head(inputs).mean(1)
        for sample, score in zip(data_samples, scores):
            sample.pred = score.argmax()
        return data_samples


class ToyData(Dataset):
    metainfo = dict(classes=[f'class{i}' for i in range(NUM_CLASSES)])

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        centres = F.normalize(torch.randn(NUM_CLASSES, DIM, generator=g), 1)
        self.labels = torch.arange(SAMPLES) % NUM_CLASSES
        self.feats = centres[self.labels][:, None] + 0.3 * torch.randn(
            SAMPLES, TOKENS, DIM, generator=g)
        # text proxies off the image clusters (a modality gap)
        self.text = centres + 0.8 * F.normalize(
            torch.randn(DIM, generator=g), dim=0)

    def __len__(self):
        return SAMPLES

    def __getitem__(self, i):
        return self.feats[i], BaseDataElement(
            metainfo=dict(img_path=f'toy{i}.bin'), gt=self.labels[i])


def _collate(batch):
    return dict(
        inputs=torch.stack([b[0] for b in batch]),
        data_samples=[b[1] for b in batch])


class ToyAccuracy(BaseMetric):
    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results.extend(int(s['pred'] == s['gt']) for s in data_samples)

    def compute_metrics(self, results):
        return dict(acc=sum(results) / len(results))


def test_a_fourth_task_registers_a_collector(toy_task, tmp_path):
    data = ToyData()
    runner = Runner(
        model=ToyModel(data.text),
        work_dir=str(tmp_path),
        test_dataloader=DataLoader(data, batch_size=5, collate_fn=_collate),
        test_cfg=dict(
            type='InMaPTestLoop',
            task=toy_task,
            toy_tokens=3,
            iters=30,
            progress=False,
            save_proxies=True),
        test_evaluator=Evaluator(ToyAccuracy()))
    metrics = runner.test()
    assert {'toy/acc', 'inmap/toy/acc'} <= set(metrics)
    loop = runner.test_loop
    assert loop.summary['head']['num_features'] == SAMPLES * 3
    assert loop.summary['head']['col_marginal'] == 'uniform'
    learned = loop.proxies['head']['full']
    assert learned.shape == (NUM_CLASSES, DIM)
    assert (learned - runner.model.head.text).norm(dim=1).max() > 1e-3
    # hooks gone, text embeddings back, options saved with the proxies
    assert not runner.model.head._forward_hooks
    assert runner.model.head.class_proxies is None
    saved = torch.load(
        osp.join(tmp_path, 'inmap_proxies.pth'), weights_only=True)
    assert saved['meta']['task'] == 'toy'
    assert saved['meta']['options']['toy_tokens'] == 3


def test_collector_options_are_loop_options(toy_task):
    assert 'toy_tokens' in loop_options()
    cfg = enable_inmap(Config(dict(inmap=dict(toy_tokens=4))))
    assert cfg.test_cfg == dict(type='InMaPTestLoop', toy_tokens=4)
    runner = SimpleNamespace(
        cfg=Config(dict(default_scope='icar_toy')), work_dir='.')
    # every registered collector checks its options, whatever the task
    with pytest.raises(ValueError, match='InMaPTestLoop: toy_tokens must'):
        InMaPTestLoop(runner, None, None, toy_tokens=0)
    # the task of a scope: the collector whose default_scope it is
    assert InMaPTestLoop._task_from_scope(runner) == 'toy'


@pytest.mark.parametrize('options', [
    dict(tau_i=-1.0),
    dict(alpha=2.0),
    dict(sinkhorn_iters=1.5),
    dict(iters=-1),
    dict(chunk_size=0),
    dict(gamma=1.0, col_marginal=[1.0, 1.0]),
])
def test_loop_and_learning_refuse_with_the_same_words(options):
    x = F.normalize(torch.randn(6, 4), dim=1)
    t = F.normalize(torch.randn(4, 2), dim=0)
    with pytest.raises((TypeError, ValueError)) as learning:
        learn_vision_proxies(x, t, progress=False, **options)
    runner = SimpleNamespace(
        cfg=Config(dict(default_scope='mmseg')), work_dir='.')
    with pytest.raises(type(learning.value)) as loop:
        InMaPTestLoop(runner, None, None, **options)
    assert str(loop.value) == f'InMaPTestLoop: {learning.value}'
