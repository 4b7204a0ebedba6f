"""The pipeline the demos run on a single input."""
import copy
from typing import List

from mmengine.config import Config


def inference_pipeline(cfg: Config) -> List[dict]:
    """The config's test pipeline without annotation loading.

    Read from ``test_dataloader.dataset`` (through dataset wrappers:
    ``dataset`` / ``datasets[0]``), else from a top-level ``test_pipeline``.
    """
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    while isinstance(dataset, dict) and 'pipeline' not in dataset:
        if 'dataset' in dataset:
            dataset = dataset['dataset']
        elif dataset.get('datasets'):
            dataset = dataset['datasets'][0]
        else:
            break
    pipeline = dataset.get('pipeline') or cfg.get('test_pipeline')
    if not pipeline:
        raise KeyError(f'demo: {cfg.filename!r} has neither '
                       'test_dataloader.dataset.pipeline nor test_pipeline')
    # an input has no annotations (mmdet.LoadAnnotations, ... included)
    return [t for t in copy.deepcopy(pipeline)
            if str(t.get('type', '')).split('.')[-1] != 'LoadAnnotations']
