"""`emclassify bench` runs every measurement on a tiny folder and reports consistent figures."""
from __future__ import annotations

import json

import pytest

from emclassify import bench
from emclassify.cli import main


def test_bench_small_run(tmp_path):
    cfg = bench.BenchConfig(n_images=24, input_size=32, batch_size=16, arch="lipnet2", folder=tmp_path / "f",
                            repeats=1, try_compile=False)
    r = bench.run(cfg, log=lambda _: None)
    assert r["n_images"] == 24 and (tmp_path / "f" / "manifest.csv").is_file()
    for key in ("preprocess", "model_alone", "end_to_end"):
        assert set(r[key]) == {"naive", "tuned", "native"} and all(v > 0 for v in r[key].values())
    # all three pipelines classify every file the same way
    assert r["predictions_agree"] == {"naive": 24, "tuned": 24}
    assert r["tuned_best"] in r["tuned_variants"] and "model" in r["tuned_variants"][r["tuned_best"]]
    # every plain-PyTorch variant ran (a variant that fails is reported as an error string instead)
    assert all(isinstance(v, dict) and "model" in v for v in r["tuned_variants"].values()), r["tuned_variants"]
    g = r["gemm_gflops"]
    assert g["ceiling"] == max(g["mkl"], g["onednn"]) > 0
    assert all(0 < t["gflops"] and t["of_ceiling"] == pytest.approx(t["gflops"] / g["ceiling"])
               for t in r["trunk"].values())
    md = bench.format_markdown(r)
    assert "| end to end |" in md and "native ÷ naive" in md and r["tuned_best"] in md
    json.dumps(r)  # JSON-able for --json


def test_bench_cli_rejects_unknown_arch(capsys):
    assert main(["bench", "--arch", "lipnet99"]) == 2
    assert "--arch must be one of" in capsys.readouterr().err
