"""Model files: round trip, card contents, and refusal of foreign / corrupt / code-running files."""
from __future__ import annotations

import pickle

import pytest
import torch

from emclassify.modelfile import ModelCard, ModelFileError, load_model, read_card, save_model
from emclassify.models import create_model
from emclassify.preprocess import PreprocessConfig

from conftest import make_model_file


def test_round_trip_weights_and_card(tmp_path):
    torch.manual_seed(1)
    model = create_model("lipnet2", 3, 40).eval()
    card = ModelCard(classes=["uni", "multi", "unc"], arch="lipnet2",
                     preprocess=PreprocessConfig(mode="mask", size=40, normalize="minmax"),
                     training={"epochs": 3}, metrics={"validation": {"macro_f1": 0.5}},
                     data={"fingerprint": "abc"})
    path = save_model(tmp_path / "m.safetensors", model, card)
    loaded = load_model(path)
    x = torch.randn(2, 1, 40, 40)
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert loaded.card.to_dict() == card.to_dict()
    assert loaded.card.software["torch"] == torch.__version__ and loaded.card.created
    assert len(loaded.sha256) == 64
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


class _RunsCode:
    def __reduce__(self):
        return (open, (str(_RunsCode.target), "w"))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    _RunsCode.target = tmp_path / "pwned"
    bad = tmp_path / "evil.safetensors"
    torch.save({"state": _RunsCode()}, bad)          # zip-based torch checkpoint
    raw = tmp_path / "evil.pt"
    raw.write_bytes(pickle.dumps(_RunsCode()))       # bare pickle
    for p in (bad, raw):
        with pytest.raises(ModelFileError, match="never loads pickles"):
            load_model(p)
    assert not _RunsCode.target.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_files_get_clear_errors(tmp_path, damage):
    good = make_model_file(tmp_path / "good.safetensors")
    data = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 100, "empty": b""}[damage])
    with pytest.raises(ModelFileError, match=str(bad.name)):
        load_model(bad)


def test_safetensors_without_card_and_mismatched_weights(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="without an emclassify model card"):
        load_model(plain)
    good = make_model_file(tmp_path / "m.safetensors", arch="lipnet1")
    card = read_card(good)
    card.arch = "lipnet2"  # card lies about the architecture
    save_model(tmp_path / "lie.safetensors", create_model("lipnet1", 3, 32), card)
    with pytest.raises(ModelFileError, match="weights do not match architecture 'lipnet2'"):
        load_model(tmp_path / "lie.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "none.safetensors")
