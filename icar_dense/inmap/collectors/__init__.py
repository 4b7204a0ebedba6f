"""InMaP feature collectors, one per task, registered in
:data:`INMAP_COLLECTORS` under the task name the loop's ``task`` option
takes: ``'clip'`` (mmaction2), ``'pixel'`` (mmseg), ``'region'`` (mmdet).

None of them imports its host library at import time (the region collector
imports mmdet's RoI extractor class when it is attached to a model).
"""
from .base import (INMAP_COLLECTORS, BaseFeatureCollector, CollectorHook,
                   collector_options, find_text_classifiers, sample_keys)
from .clip import ClipCollector
from .pixel import PixelCollector, sample_pixels
from .region import RegionCollector

__all__ = [
    'INMAP_COLLECTORS', 'BaseFeatureCollector', 'ClipCollector',
    'CollectorHook', 'PixelCollector', 'RegionCollector', 'collector_options',
    'find_text_classifiers', 'sample_keys', 'sample_pixels'
]
