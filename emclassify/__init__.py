"""emclassify: classify transmission-EM particle images and keep auditable records.

Qt-free core API (the CLI and the GUI are thin layers over it):

- data: :func:`emclassify.io.load_dataset`, :func:`emclassify.io.list_images`, :func:`emclassify.io.read_image`
- preprocessing: :class:`PreprocessConfig`, :func:`emclassify.ops.preprocess`
- models: :func:`emclassify.models.create_model`, :func:`load_model`, :func:`save_model`
- inference: :class:`Classifier`, :func:`classify_folder`, :func:`run_batch`
- synthetic data: :func:`emclassify.synth.generate`
"""
from ._native import EmclassifyNativeWarning, backend_description
from ._version import __version__
from .preprocess import PreprocessConfig

__all__ = [
    "EmclassifyNativeWarning",
    "PreprocessConfig",
    "__version__",
    "backend_description",
]
