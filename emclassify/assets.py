"""Files shipped inside the package: the default model and the sample folder.

Both are made by ``packaging/make_assets.py`` from the project's own synthetic
liposome generator (no outside data or weights).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL_NAME = "lamellarity-lipnet-fcn.safetensors"


def data_dir() -> Path:
    """``emclassify/data`` in a source tree or install; beside the executable in a frozen bundle."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "emclassify" / "data"
    return Path(__file__).resolve().parent / "data"


def default_model_path() -> Path:
    """The bundled lamellarity model (``EMCLASSIFY_DEFAULT_MODEL`` overrides it)."""
    override = os.environ.get("EMCLASSIFY_DEFAULT_MODEL")
    return Path(override) if override else data_dir() / "models" / DEFAULT_MODEL_NAME


def sample_folder() -> Path:
    """The bundled folder of synthetic liposome images (lamellarity, with masks)."""
    return data_dir() / "samples"
