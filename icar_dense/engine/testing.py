"""Config edits behind ``tools/test.py``'s options, for all three tasks."""
import os.path as osp
import warnings

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


def enable_show_dir(cfg: Config, show_dir: str) -> Config:
    """Turn on the host library's visualization hook, writing to show_dir."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise KeyError(
            f'--show-dir: config {cfg.filename!r} has no '
            "default_hooks.visualization (inherit a configs/_base_/"
            'default_runtime_*.py)')
    vis = hooks['visualization']
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        vis['draw'] = True
        vis['test_out_dir'] = show_dir
    elif scope == 'mmseg':
        vis['draw'] = True
        vis['interval'] = 1
        cfg.visualizer['save_dir'] = show_dir
    elif scope == 'mmaction':
        if vis.get('type') in ('VisualizationHook',
                               'mmaction.VisualizationHook'):
            # mmaction2 1.2.0's hook crashes on 3D inputs: see video_vis.py
            vis['type'] = 'VideoVisualizationHook'
        vis['enable'] = True
        vis['out_dir'] = show_dir
        vis['interval'] = 1
    else:
        raise ValueError(f'--show-dir: unsupported default_scope {scope!r}')
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
        from icar_dense.utils.checkpoint import load_checkpoint_file
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
        node['unseen_classes'] = [
            c for c in node['unseen_classes'] if c in names]
    for value in node.values():
        _retarget(value, source, embeddings, names, counter)


def _retarget_evaluator(evaluator, names):
    """SeenUnseenIoUMetric: unseen names of the new vocabulary only; none
    left -> plain IoUMetric (there is no unseen group to report)."""
    if isinstance(evaluator, (list, tuple)):
        for item in evaluator:
            _retarget_evaluator(item, names)
        return
    if not isinstance(evaluator, dict):
        return
    if 'metrics' in evaluator:
        _retarget_evaluator(evaluator['metrics'], names)
    if evaluator.get('unseen_classes'):
        kept = [c for c in evaluator['unseen_classes'] if c in names]
        if kept:
            evaluator['unseen_classes'] = kept
        else:
            evaluator.pop('unseen_classes')
            evaluator['type'] = 'IoUMetric'


def _set_dataset_classes(dataset_cfg, names):
    while isinstance(dataset_cfg, dict) and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']  # dataset wrappers
    metainfo = dict(dataset_cfg.get('metainfo') or {})
    metainfo['classes'] = tuple(names)
    dataset_cfg['metainfo'] = ConfigDict(metainfo)


def use_vocabulary(cfg: Config, value: str) -> Config:
    """Evaluate / predict with another class list, without retraining.

    Every ``TextClassifier`` in the model gets the new vocabulary (or the
    precomputed embeddings), every head owning one gets the matching
    ``num_classes``, and the test dataset's metainfo lists the new classes
    (so metrics and visualizations use them).
    """
    source, embeddings, names = read_vocabulary_argument(value)
    counter = dict(classifiers=0)
    _retarget(cfg.model, source, embeddings, names, counter)
    if 'tta_model' in cfg:
        _retarget(cfg.tta_model, source, embeddings, names, counter)
    if counter['classifiers'] == 0:
        raise ValueError(
            f'--vocabulary: the model of {cfg.filename!r} has no '
            'TextClassifier, so its classes are fixed by training')
    _retarget_evaluator(cfg.get('test_evaluator'), names)
    _set_dataset_classes(cfg.test_dataloader.dataset, names)
    if len(names) < 2:
        warnings.warn(f'--vocabulary: a single class ({names}); '
                      'softmax-based heads need at least two')
    return cfg
