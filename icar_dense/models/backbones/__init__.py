"""iCAR Swin backbones (2D: mmdet's Swin; 3D: mmaction2's), imported on
first use."""
from icar_dense._lazy import lazy_exports

_EXPORTS = {
    'SWIN_ARCHS': 'icar_swin',
    'ICARSwinTransformer': 'icar_swin',
    'ICARSwinTransformer3D': 'icar_swin3d',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
