"""Video recognition (mmaction2): one embedding per clip x crop view."""
import torch.nn.functional as F

from .base import INMAP_COLLECTORS, BaseFeatureCollector

__all__ = ['ClipCollector']


@INMAP_COLLECTORS.register_module(name='clip')
class ClipCollector(BaseFeatureCollector):
    """Every view the recognition head classifies (clips x crops).

    Options:
        average_views (bool): One mean embedding per video instead of one
            per clip x crop view. Default False.
    """

    default_scope = 'mmaction'
    options = dict(average_views=False)

    def select(self, name, module, feats, logits):
        return self.embed_rows(module, feats)

    def reduce(self, index, parts, feats):
        if not self.average_views:
            return feats
        return F.normalize(
            feats.float().mean(0, keepdim=True), dim=-1).to(self.dtype)
