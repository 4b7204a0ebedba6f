"""The configs' optimizer constructor (SummarizedOptimWrapperConstructor)
logs one summary for frozen parameters instead of one warning per tensor;
other records pass through; mmengine's default constructor is unchanged."""
import logging

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import (DefaultOptimWrapperConstructor,
                            build_optim_wrapper)

import icar_dense  # noqa: F401
from icar_dense.engine.optim_logging import frozen_unit


class _Model(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.text_classifier = nn.Module()
        self.text_classifier.text_encoder = nn.Sequential(
            nn.Linear(4, 8), nn.Linear(8, 4))
        self.text_classifier.text_encoder.requires_grad_(False)
        self.head = nn.Linear(4, 2)
        self.head.bias.requires_grad_(False)


def test_frozen_unit():
    assert frozen_unit('roi_head.bbox_head.0.text_classifier.text_encoder.'
                       'model.encoder.layer.3.attention.weight') == \
        'roi_head.bbox_head.0.text_classifier.text_encoder'
    assert frozen_unit('backbone.stages.0.blocks.1.norm1.weight') == \
        'backbone'
    assert frozen_unit('head.fc.bias') == 'head'
    assert frozen_unit('bias') == 'bias'


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _build(constructor_type, records):
    # a new logger is the current one: mmengine's constructor logs there
    logger = MMLogger.get_instance(f'test_optim_logging_{constructor_type}',
                                   log_level='INFO')
    logger.addHandler(records)
    try:
        return build_optim_wrapper(_Model(), dict(
            type='OptimWrapper', constructor=constructor_type,
            optimizer=dict(type='SGD', lr=0.1),
            paramwise_cfg=dict(bias_lr_mult=2.)))
    finally:
        logger.removeHandler(records)


def test_default_constructor_left_as_it_is():
    records = _Records()
    _build('DefaultOptimWrapperConstructor', records)
    text = '\n'.join(records.lines)
    assert text.count('is skipped since its requires_grad=False') == 5
    assert 'Frozen parameters' not in text


def test_one_summary_instead_of_a_warning_per_tensor():
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
    logger = MMLogger.get_instance('test_optim_logging', log_level='INFO')
    records = _Records()
    logger.addHandler(records)
    model = _Model()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='SummarizedOptimWrapperConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper',
                               optimizer=dict(type='SGD', lr=0.1)),
        paramwise_cfg=dict(bias_lr_mult=2.)))
    assert isinstance(constructor, DefaultOptimWrapperConstructor)
    try:
        wrapper = constructor(model)
        # records outside a constructor call are not touched
        print_log('x.weight is skipped since its requires_grad=False',
                  logger='current', level=logging.WARNING)
    finally:
        logger.removeHandler(records)
    text = '\n'.join(records.lines)
    assert text.count('is skipped since its requires_grad=False') == 1
    assert ('Frozen parameters (requires_grad=False) left out of the '
            'optimizer: 5 tensors in 2 module(s)') in text
    assert 'text_classifier.text_encoder: 4 tensors, 0.0M parameters' in text
    assert 'head: 1 tensors' in text
    trained = [p for g in wrapper.optimizer.param_groups for p in g['params']]
    assert len(trained) == 3  # backbone weight + bias, head weight
    # the filter is gone once the constructor returns
    assert not MMLogger.get_current_instance().filters
