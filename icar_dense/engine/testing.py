"""Config edits behind ``tools/test.py``'s options, for all three tasks."""
import copy
import os.path as osp
import warnings
from typing import Optional

from mmengine.config import Config, ConfigDict

EMBEDDING_SUFFIXES = ('.pth', '.pt')


def enable_tta(cfg: Config) -> Config:
    """Swap in ``tta_model``/``tta_pipeline`` (mmdet/mmseg convention)."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise KeyError(f'--tta: config {cfg.filename!r} defines no '
                       f'{" / ".join(missing)}')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    if cfg.model.get('type') in ('ICAREncoderDecoder',
                                 'mmseg.ICAREncoderDecoder'):
        # SegTTAModel averages seg_logits, which the exact large-vocabulary
        # argmax of ICAREncoderDecoder does not produce
        cfg.model.large_vocab = None
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    return cfg


def enable_show_dir(cfg: Config, show_dir: Optional[str] = None,
                    show: bool = False, wait_time: float = 2.,
                    interval: int = 1) -> Config:
    """Turn on the host library's visualization hook (``--show`` /
    ``--show-dir``), the same way for the three tasks.

    Args:
        cfg (Config): The test config (changed in place).
        show_dir (str, optional): Write the pictures here; a relative path
            is relative to ``WORK_DIR/<timestamp>/`` (mmdet's rule, used for
            segmentation and action too): ``<image name>`` for detection and
            segmentation, ``<video name>/frames_0/<frame>.png`` for action.
        show (bool): Show each picture in a window.
        wait_time (float): Seconds a ``show`` window stays open.
        interval (int): Draw every ``interval``-th test sample.
    """
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise KeyError(
            '--show/--show-dir: config '
            f'{cfg.filename!r} has no default_hooks.visualization (inherit a '
            'configs/_base_/default_runtime_*.py)')
    vis = hooks['visualization']
    scope = cfg.get('default_scope')
    hook_type = str(vis.get('type', '')).split('.')[-1]
    if scope == 'mmdet':
        vis['draw'] = True
        vis['test_out_dir'] = show_dir
    elif scope == 'mmseg':
        if hook_type == 'SegVisualizationHook':
            # mmseg's hook writes into the visualizer's save_dir; this one
            # writes <image name> into test_out_dir, as mmdet's does
            vis['type'] = 'SegShowDirHook'
        vis['draw'] = True
        vis['test_out_dir'] = show_dir
    elif scope == 'mmaction':
        if hook_type == 'VisualizationHook':
            # mmaction2 1.2.0's hook crashes on 3D inputs: see video_vis.py
            vis['type'] = 'VideoVisualizationHook'
        vis['enable'] = True
        vis['out_dir'] = show_dir
    else:
        raise ValueError(
            f'--show/--show-dir: unsupported default_scope {scope!r}')
    vis['interval'] = interval
    if show:
        vis['show'] = True
        vis['wait_time'] = wait_time
    return cfg


def enable_seg_out_dir(cfg: Config, out_dir: str) -> Config:
    """``--out-dir``: write each segmentation prediction as a label-map PNG
    (mmseg's ``tools/test.py --out``: ``IoUMetric(output_dir=...)``)."""
    if cfg.get('default_scope') != 'mmseg':
        raise ValueError(
            '--out-dir writes segmentation label maps; config '
            f'{cfg.filename!r} is {cfg.get("default_scope")!r} (use --out '
            'FILE.pkl for the raw predictions)')
    found = 0

    def _set(node):
        nonlocal found
        if isinstance(node, (list, tuple)):
            for item in node:
                _set(item)
        elif isinstance(node, dict):
            if 'metrics' in node:
                _set(node['metrics'])
            elif 'IoUMetric' in str(node.get('type', '')) or \
                    'unseen_classes' in node:
                node['output_dir'] = out_dir
                found += 1

    _set(cfg.test_evaluator)
    if not found:
        raise ValueError(f'--out-dir: the test_evaluator of {cfg.filename!r} '
                         'has no IoUMetric to write the label maps')
    return cfg


def enable_result_dump(cfg: Config, out_file: str) -> Config:
    """Add a metric that pickles the raw predictions to ``out_file``.

    It is the *first* metric of the test evaluator: mmengine's ``Evaluator``
    computes its metrics in order, so the predictions are on disk before
    any other metric runs, and a metric that fails loses no inference.
    """
    if not out_file.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file, got {out_file!r}')
    dump = dict(
        type='DumpDetResults' if cfg.get('default_scope') == 'mmdet' else
        'DumpResults',
        out_file_path=out_file)
    evaluator = cfg.test_evaluator
    if isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = [dump] + list(evaluator)
    elif evaluator.get('type') == 'Evaluator' or 'metrics' in evaluator:
        metrics = evaluator['metrics']
        if not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        evaluator['metrics'] = [dump] + list(metrics)
    else:
        cfg.test_evaluator = [dump, evaluator]
    return cfg


def read_vocabulary_argument(value: str):
    """``--vocabulary`` -> (vocabulary source, embeddings path, class names).

    Accepted: a precomputed embeddings file (``.pth``), a ``.txt``/``.json``
    vocabulary file, a dataset name known to the text module, or a
    comma-separated list of class names.
    """
    from icar_dense.models.text import load_vocabulary
    if value.endswith(EMBEDDING_SUFFIXES):
        from icar_dense.checkpoint import load_checkpoint_file
        payload = load_checkpoint_file(value)
        if not isinstance(payload, dict) or 'class_names' not in payload:
            raise KeyError(f'--vocabulary {value!r}: an embeddings file must '
                           "hold 'class_names' and 'embeddings' (write one "
                           'with tools/build_vocab_embeddings.py)')
        return None, value, list(payload['class_names'])
    if value.endswith(('.txt', '.json')):
        if not osp.isfile(value):
            raise FileNotFoundError(f'--vocabulary: file not found: {value!r}')
        return value, None, list(load_vocabulary(value).names)
    if ',' in value:
        names = [n.strip() for n in value.split(',') if n.strip()]
        return names, None, list(load_vocabulary(names).names)
    # a dataset name ('coco', 'lvis_v1', ...) or a single class name
    try:
        return value, None, list(load_vocabulary(value).names)
    except (KeyError, ValueError, FileNotFoundError) as err:
        if '/' in value or osp.sep in value or osp.splitext(value)[1]:
            # meant as a file: a typo must not become a class name
            raise FileNotFoundError(
                f'--vocabulary {value!r}: no such file, and not a '
                'vocabulary name (files end in .txt, .json, '
                f"{', '.join(EMBEDDING_SUFFIXES)})") from err
        warnings.warn(f'--vocabulary {value!r} is not a known vocabulary '
                      f'({err}); it is taken as the name of one class')
        return [value], None, [value]


def _retarget(node, source, embeddings, names, counter):
    if isinstance(node, (list, tuple)):
        for item in node:
            _retarget(item, source, embeddings, names, counter)
        return
    if not isinstance(node, dict):
        return
    if node.get('type') == 'TextClassifier':
        node['vocabulary'] = source
        node['embeddings'] = embeddings
        counter['classifiers'] += 1
    if 'text_classifier' in node and 'num_classes' in node:
        node['num_classes'] = len(names)
    if 'text_classifier' in node and node.get('unseen_classes'):
        # a training-time split (seg heads): keep the unseen names that are
        # still in the vocabulary; the others do not exist any more
        from .vocab_eval import class_key
        keys = {class_key(n) for n in names}
        node['unseen_classes'] = [
            c for c in node['unseen_classes'] if class_key(c) in keys]
    for value in node.values():
        _retarget(value, source, embeddings, names, counter)


_DUMP_METRICS = ('DumpResults', 'DumpDetResults', 'DumpSegResults')


def _wrap_metric(metric):
    kind = str(metric.get('type', '')).split('.')[-1]
    if kind in _DUMP_METRICS or kind == 'VocabularyMetric':
        return metric  # raw predictions (vocabulary labels) / done
    return ConfigDict(type='VocabularyMetric', metric=metric)


def _wrap_evaluator(evaluator):
    """Every detection / segmentation metric -> ``VocabularyMetric``."""
    if evaluator is None:
        return None
    if isinstance(evaluator, (list, tuple)):
        return [_wrap_evaluator(item) for item in evaluator]
    if not isinstance(evaluator, dict):
        return evaluator
    if 'metrics' in evaluator:
        evaluator['metrics'] = _wrap_evaluator(evaluator['metrics'])
        return evaluator
    return _wrap_metric(evaluator)


def _wrap_dataset(dataset_cfg, vocabulary, dataset_classes):
    if dataset_cfg.get('type') in ('VocabularyDataset',
                                   'mmengine.VocabularyDataset'):
        dataset_cfg['vocabulary'] = vocabulary
        return dataset_cfg
    return ConfigDict(
        type='VocabularyDataset',
        dataset=dataset_cfg,
        vocabulary=vocabulary,
        dataset_classes=dataset_classes)


def _configured_vocabulary(node):
    """The vocabulary of the config's first ``TextClassifier``."""
    if isinstance(node, dict):
        if node.get('type') == 'TextClassifier':
            return node.get('vocabulary')
        values = list(node.values())
    elif isinstance(node, (list, tuple)):
        values = list(node)
    else:
        return None
    for value in values:
        found = _configured_vocabulary(value)
        if found is not None:
            return found
    return None


def use_vocabulary(cfg: Config, value: str) -> Config:
    """Evaluate / predict with another class list, without retraining.

    Every ``TextClassifier`` in the model gets the new vocabulary (or the
    precomputed embeddings), every head owning one gets the matching
    ``num_classes``; the test dataset is wrapped in
    :class:`~icar_dense.engine.vocab_eval.VocabularyDataset` (classes matched
    to the vocabulary by name, ground truth re-indexed into it) and each
    detection / segmentation metric in
    :class:`~icar_dense.engine.vocab_metric.VocabularyMetric` (evaluated on the
    vocabulary classes that are classes of the dataset; the others are
    named in the log as "no ground truth" / "not in the vocabulary").
    Video metrics score the vocabulary as it is (a class without videos is
    a wrong answer); videos of classes outside it are left out.
    """
    from . import vocab_eval, vocab_metric  # noqa: F401  (registers them)
    if not cfg.get('test_dataloader') or 'model' not in cfg or not cfg.get(
            'test_cfg', True):
        raise ValueError(
            f'--vocabulary: {cfg.filename!r} is not a tools/test.py config '
            '(no test_dataloader / test_cfg); a configs/cls zero-shot '
            'classification config is run by tools/zeroshot_cls.py CONFIG '
            'DATA_DIR --classes FILE')
    source, embeddings, names = read_vocabulary_argument(value)
    # names the labels of a dataset without class names (a Kinetics list)
    configured = copy.deepcopy(_configured_vocabulary(cfg.model))
    counter = dict(classifiers=0)
    _retarget(cfg.model, source, embeddings, names, counter)
    if 'tta_model' in cfg:
        _retarget(cfg.tta_model, source, embeddings, names, counter)
    if counter['classifiers'] == 0:
        raise ValueError(
            f'--vocabulary: the model of {cfg.filename!r} has no '
            'TextClassifier, so its classes are fixed by training')
    # the dataset's own classes stay; they are matched to the vocabulary
    # by name (a list for an embeddings file, else the source itself, so
    # that descriptions reach a MultiSplitTestLoop's per-split vocabulary)
    cfg.test_dataloader.dataset = _wrap_dataset(
        cfg.test_dataloader.dataset, names if source is None else source,
        configured)
    if cfg.get('default_scope') in ('mmdet', 'mmseg'):
        cfg.test_evaluator = _wrap_evaluator(cfg.get('test_evaluator'))
    if len(names) < 2:
        warnings.warn(f'--vocabulary: a single class ({names}); '
                      'softmax-based heads need at least two')
    return cfg
