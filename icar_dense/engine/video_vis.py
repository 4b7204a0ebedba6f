"""mmaction2 1.2.0's VisualizationHook, made to work for 3D recognizers."""
from mmaction.engine.hooks import VisualizationHook
from mmaction.registry import HOOKS
from mmengine.structures import LabelData


@HOOKS.register_module()
class VideoVisualizationHook(VisualizationHook):
    """mmaction2 1.2.0's ``VisualizationHook`` made to work:

    * 3D recognizers get inputs of shape (views, C, T, H, W): the first view
      (clip x crop) is drawn (upstream permutes the 5-d tensor: RuntimeError,
      open-mmlab/mmaction2#2697);
    * ``show`` is passed as ``show_frames``
      (``ActionVisualizer.add_datasample`` has no ``show`` argument:
      TypeError);
    * the ground truth and the top-1 prediction are drawn: ``ActionVisualizer``
      looks for ``gt_labels`` / ``pred_labels`` while 1.2.0's
      ``ActionDataSample`` stores ``gt_label`` / ``pred_score``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draw_args['show_frames'] = self.draw_args.pop('show', False)

    def _draw_samples(self, batch_idx, data_batch, data_samples, step=0):
        inputs = [v[0] if v.dim() == 5 else v for v in data_batch['inputs']]
        samples = []
        for sample in data_samples:
            sample = sample.clone()
            if 'gt_label' in sample:
                sample.set_field(sample.gt_label, 'gt_labels')
            if 'pred_score' in sample:
                score = sample.pred_score
                sample.set_field(
                    LabelData(item=score.argmax().view(1), score=score),
                    'pred_labels')
            samples.append(sample)
        super()._draw_samples(batch_idx, dict(data_batch, inputs=inputs),
                              samples, step)
