"""Package attributes that import their module on first use (PEP 562).

``import icar_dense`` must not import mmdet, mmseg or mmaction2; the
package ``__init__`` files therefore name their classes here instead of
importing them, and ``from icar_dense.datasets import OVCocoDataset`` still
works (it imports ``icar_dense.datasets.det_ov``, and mmdet with it).
"""
import importlib
import sys


def lazy_exports(package, exports):
    """``(__getattr__, __dir__)`` for ``package`` exporting ``exports``.

    Args:
        package (str): The package's ``__name__``.
        exports (dict): Attribute name -> submodule (relative, no dot) that
            defines it.
    """

    def __getattr__(name):
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(
                f'module {package!r} has no attribute {name!r}')
        value = getattr(
            importlib.import_module(f'{package}.{submodule}'), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
