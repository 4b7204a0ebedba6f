"""Each fix of icar_dense.compat, checked against the real released stack."""
import pickle

import numpy as np
import pytest
import torch

import icar_dense  # noqa: F401
from icar_dense import compat
from conftest import free_port


def test_apply_is_idempotent():
    import mmengine.dist.utils as dist_utils
    before = dist_utils._init_dist_pytorch
    compat.apply()
    compat.apply()
    assert dist_utils._init_dist_pytorch is before


def test_mmaction_models_import_and_build():
    compat.finish_mmaction_import()
    import mmaction.models  # noqa: F401
    from mmaction.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    recognizer = MODELS.build(
        dict(
            type='Recognizer3D',
            backbone=dict(
                type='ResNet3dSlowOnly',
                depth=50,
                pretrained=None,
                base_channels=8,
                lateral=False,
                conv1_kernel=(1, 7, 7),
                conv1_stride_t=1,
                pool1_stride_t=1,
                inflate=(0, 0, 1, 1),
                norm_eval=False),
            cls_head=dict(
                type='I3DHead', in_channels=256, num_classes=3),
            data_preprocessor=dict(
                type='ActionDataPreprocessor', format_shape='NCTHW')))
    clip = torch.rand(1, 1, 3, 4, 32, 32)
    scores = recognizer(clip, mode='tensor', stage='head')
    assert scores.shape[-1] == 3


def test_mmaction_drn_placeholder_gives_clear_error():
    compat.finish_mmaction_import()
    from mmaction.registry import MODELS
    with pytest.raises(Exception, match='DRN'):
        MODELS.build(dict(type='DRN'))


def test_transformers_still_usable_after_mmaction_import():
    compat.finish_mmaction_import()
    from transformers import RobertaConfig, RobertaModel
    model = RobertaModel(
        RobertaConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32),
        add_pooling_layer=False)
    out = model(input_ids=torch.tensor([[0, 5, 6, 2]]))
    assert out.last_hidden_state.shape == (1, 4, 16)


def test_mmengine_checkpoint_types_load_with_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('compat_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 3)
    hub.update_info('epoch_time', np.float64(2.0))
    ckpt = dict(
        meta=dict(seed=np.int64(3), hist=np.arange(3),
                  dataset_meta=dict(classes=('a', 'b'))),
        message_hub=hub.state_dict(),
        state_dict=dict(w=torch.ones(2)))
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True)
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)
    assert loaded['meta']['seed'] == 3


class _RunsCode:

    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned')", ))


def test_code_executing_pickle_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'x': _RunsCode()}, f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_init_dist_without_gpu_uses_gloo(monkeypatch, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only path')
    import torch.distributed as dist
    import mmengine.dist.utils as dist_utils
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', free_port())
    with pytest.warns(UserWarning, match='gloo'):
        dist_utils._init_dist_pytorch('nccl')
    try:
        assert dist.get_backend() == 'gloo'
        from mmengine.model import MMDistributedDataParallel
        model = MMDistributedDataParallel(
            module=torch.nn.Linear(2, 2), device_ids=[0])
        assert model.device_ids is None
    finally:
        dist.destroy_process_group()


def test_lvis_eval_runs_on_current_numpy(tmp_path):
    from data_factory import make_coco
    from lvis import LVIS, LVISEval, LVISResults
    assert not hasattr(np, 'float')
    ann = make_coco(str(tmp_path), [dict(id=1, name='cat', frequency='r'),
                                    dict(id=2, name='dog', frequency='f')],
                    num_images=2, lvis=True)
    gt = LVIS(ann)
    dets = [dict(image_id=a['image_id'], category_id=a['category_id'],
                 bbox=a['bbox'], score=0.9) for a in gt.dataset['annotations']]
    lvis_eval = LVISEval(gt, LVISResults(gt, dets), 'bbox')
    lvis_eval.run()
    assert lvis_eval.results['AP'] == pytest.approx(1.0)
    assert not hasattr(np, 'float'), 'numpy itself must stay unpatched'
