from .icar_swin import SWIN_ARCHS, ICARSwinTransformer

__all__ = ['SWIN_ARCHS', 'ICARSwinTransformer']
from .icar_swin3d import ICARSwinTransformer3D  # noqa: F401,E402
