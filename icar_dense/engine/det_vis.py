"""A detection visualizer that never draws an empty prediction panel."""
import numpy as np
from mmdet.registry import VISUALIZERS
from mmdet.visualization import DetLocalVisualizer


@VISUALIZERS.register_module()
class OVDetLocalVisualizer(DetLocalVisualizer):
    """mmdet's ``DetLocalVisualizer`` that always shows what the model
    predicts.

    With stock mmdet, a model whose scores all lie under ``pred_score_thr``
    (a briefly trained model, a vocabulary of thousands of classes sharing
    the softmax, a novel class) gets a picture without a single box, which
    reads as "it does not work". Here, when no prediction clears the
    threshold, the ``fallback_topk`` best predictions are drawn with their
    scores instead, and the rule used is written on the prediction panel
    ("score > 0.30: 4 shown" or "no score > 0.30: top 3 shown").

    Args:
        fallback_topk (int): How many predictions to draw when none clears
            the threshold; 0 keeps mmdet's behaviour (an empty panel).
        caption (bool): Write the rule on the prediction panel.
        **kwargs: ``DetLocalVisualizer``'s arguments.
    """

    def __init__(self, name='visualizer', fallback_topk=3, caption=True,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(fallback_topk, int) or fallback_topk < 0:
            raise ValueError('OVDetLocalVisualizer: fallback_topk must be an '
                             f'integer >= 0, got {fallback_topk!r}')
        self.fallback_topk = fallback_topk
        self.caption = caption
        self._caption_text = None

    def add_datasample(self,
                       name,
                       image,
                       data_sample=None,
                       draw_gt=True,
                       draw_pred=True,
                       show=False,
                       wait_time=0,
                       out_file=None,
                       pred_score_thr=0.3,
                       step=0):
        self._caption_text = None
        if (draw_pred and data_sample is not None
                and 'pred_instances' in data_sample):
            pred = data_sample.pred_instances
            shown = int((pred.scores > pred_score_thr).sum())
            if shown == 0 and len(pred) and self.fallback_topk:
                k = min(self.fallback_topk, len(pred))
                data_sample = data_sample.clone()
                data_sample.pred_instances = pred[pred.scores.topk(k).indices]
                self._caption_text = (f'no score > {pred_score_thr:.2f}: '
                                      f'top {k} shown')
                pred_score_thr = float('-inf')
            else:
                self._caption_text = (f'score > {pred_score_thr:.2f}: '
                                      f'{shown} shown')
        try:
            super().add_datasample(
                name, image, data_sample=data_sample, draw_gt=draw_gt,
                draw_pred=draw_pred, show=show, wait_time=wait_time,
                out_file=out_file, pred_score_thr=pred_score_thr, step=step)
        finally:
            self._caption_text = None

    def _draw_instances(self, image, instances, classes, palette):
        drawn = super()._draw_instances(image, instances, classes, palette)
        # predictions carry scores, ground truth does not
        if self.caption and self._caption_text and 'scores' in instances:
            self.set_image(drawn)
            height, width = drawn.shape[:2]
            self.draw_texts(
                self._caption_text,
                np.array([4, 4]),
                colors='white',
                font_sizes=int(max(10, min(height, width) / 24)),
                vertical_alignments='top',
                bboxes=[dict(facecolor='black', alpha=0.7, pad=0.6,
                             edgecolor='none')])
            drawn = self.get_image()
        return drawn
