from .icar_swin import SWIN_ARCHS, ICARSwinTransformer

__all__ = ['SWIN_ARCHS', 'ICARSwinTransformer']
