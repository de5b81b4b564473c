"""emclassify: classify transmission-EM particle images and keep auditable records.

Qt-free core API (the CLI and the GUI are thin layers over it):

- data: :func:`emclassify.io.load_dataset`, :func:`emclassify.io.list_images`, :func:`emclassify.io.read_image`
- preprocessing: :class:`PreprocessConfig`, :func:`emclassify.ops.preprocess`
- models: :func:`emclassify.models.create_model`, :func:`load_model`, :func:`save_model`
- inference: :class:`Classifier`, :func:`classify_folder`, :func:`run_batch`
- synthetic data: :func:`emclassify.synth.generate`
"""
from ._version import __version__

# Loaded on first use (PEP 562), so `emclassify --help` and other light commands start without torch.
_LAZY = {"EmclassifyNativeWarning": "._native", "backend_description": "._native", "PreprocessConfig": ".preprocess"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EmclassifyNativeWarning",
    "PreprocessConfig",
    "__version__",
    "backend_description",
]
