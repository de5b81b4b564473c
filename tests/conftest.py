"""Shared fixtures. Tests that need the real NanoShapes set skip (with the reason) when it is absent."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Feature cache in a throwaway folder: tests neither read nor fill the user's ~/.cache; removed at the end.
_THROWAWAY_CACHE = None
if "EMCLASSIFY_CACHE" not in os.environ:
    _THROWAWAY_CACHE = os.environ["EMCLASSIFY_CACHE"] = tempfile.mkdtemp(prefix="emclassify-test-cache-")


def pytest_unconfigure(config):
    if _THROWAWAY_CACHE is not None:
        shutil.rmtree(_THROWAWAY_CACHE, ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
NANOSHAPES = Path(os.environ.get("EMCLASSIFY_NANOSHAPES", REPO.parent / "shared" / "data" / "nanoshapes"))


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """NaN-fill op outputs before the kernel runs: an element never written fails the parity checks."""
    monkeypatch.setenv("EMCLASSIFY_POISON_OUTPUTS", "1")


# The marks of a module testing native ops against their references: skipped when
# EMCLASSIFY_NATIVE=0 forces the reference path, op outputs poisoned in every test.
NATIVE_OP_TESTS = [
    pytest.mark.skipif(os.environ.get("EMCLASSIFY_NATIVE") == "0", reason="EMCLASSIFY_NATIVE=0 forces the reference path"),
    pytest.mark.usefixtures("poisoned_outputs"),
]


@pytest.fixture(scope="session")
def nanoshapes() -> Path:
    if not (NANOSHAPES / "manifest.csv").is_file():
        pytest.skip(f"NanoShapes data not found at {NANOSHAPES} (set EMCLASSIFY_NANOSHAPES)")
    return NANOSHAPES


def make_model_file(path: Path, mode: str = "surround", arch: str = "lipnet-fcn", size: int = 32,
                    classes=("a", "b", "c"), seed: int = 0) -> Path:
    """An untrained (random-weight) model file: enough to exercise the pipeline."""
    import torch

    from emclassify.modelfile import ModelCard, save_model
    from emclassify.models import create_model
    from emclassify.preprocess import PreprocessConfig

    torch.manual_seed(seed)
    model = create_model(arch, len(classes), size).eval()
    card = ModelCard(classes=list(classes), arch=arch, preprocess=PreprocessConfig(mode=mode, size=size),
                     name="test model")
    return save_model(path, model, card)


@pytest.fixture
def model_file(tmp_path) -> Path:
    return make_model_file(tmp_path / "model.safetensors")


def write_tiff(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr)
    return path
