"""The LipNet registry: every model runs at its input size; the FCN at any size; docs table is current."""
from __future__ import annotations

import re

import pytest
import torch

from emclassify.models import architecture_table, create_model, get_spec, list_models, min_input_size

from conftest import REPO


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [48, 64])
def test_forward_shape_and_training_step(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, input_size=size)
    x = torch.randn(3, 1, size, size)
    out = model(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert model.embed(x).shape == (3, model.embedding_dim)


def test_lipnet4_is_the_seed_architecture():
    m = create_model("lipnet4", 3, 64)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules()) == 4
    assert sum(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules()) == 2
    drops = [mod.p for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert drops == [0.25, 0.25, 0.5]
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears[0].out_features == 512 and linears[-1].out_features == 3


@pytest.mark.parametrize("size", [8, 33, 64, 150])
def test_fcn_accepts_any_size(size):
    m = create_model("lipnet-fcn", 3, 64).eval()
    assert m(torch.randn(2, 1, size, size)).shape == (2, 3)


def test_too_small_input_and_unknown_name():
    with pytest.raises(ValueError, match="needs an input of at least"):
        create_model("lipnet5", 3, min_input_size(get_spec("lipnet5")) - 1)
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        create_model("resnet", 3, 64)


def test_documented_table_matches_the_code():
    doc = (REPO / "docs" / "MODELS.md").read_text(encoding="utf-8")
    table = architecture_table(64, 3)
    assert table in doc, "docs/MODELS.md is stale: regenerate with `emclassify models`"
    assert len(re.findall(r"^\| `lipnet", table, re.M)) == len(list_models())
