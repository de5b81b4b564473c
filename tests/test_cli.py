"""The command line: --version, --help on every subcommand, info, synth, models."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emclassify.cli import build_parser, main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "emclassify", *args], capture_output=True, text=True, env=env)


def test_version_names_backend():
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("emclassify ") and "ops backend:" in r.stdout and "torch" in r.stdout


def test_help_on_every_subcommand(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"batch", "info", "synth", "models"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        usage = "usage: emclassify-gui" if name == "gui" else "usage: emclassify " + name
        assert usage in capsys.readouterr().out


def test_gui_subcommand_passes_options_to_the_app(tmp_path):
    png = tmp_path / "shot.png"
    r = run_cli("gui", "--selftest", "--screenshot", str(png))
    assert r.returncode == 0, r.stderr
    assert "selftest: OK" in r.stdout and png.is_file()


def test_no_command_is_a_usage_error():
    r = run_cli()
    assert r.returncode == 2 and "usage:" in r.stderr


def test_info_prints_card(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "architecture:  lipnet-fcn" in out and "classes:       a, b, c" in out and "sha256:" in out
    assert main(["info", str(model_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["a", "b", "c"]


def test_info_on_bad_file(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"PK\x03\x04junk")
    assert main(["info", str(bad)]) == 4
    assert "never loads pickles" in capsys.readouterr().err


def test_synth_command(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--problem", "encapsulation", "--n", "12", "--seed", "2",
                 "--proportions", "1,1,1"]) == 0
    assert "full 4, empty 4, uncertain 4" in capsys.readouterr().out
    assert (tmp_path / "s" / "manifest.csv").is_file()
    assert main(["synth", str(tmp_path / "t"), "--n", "3", "--proportions", "1,x,1"]) == 2


def test_models_table(capsys):
    assert main(["models"]) == 0
    assert "`lipnet4`" in capsys.readouterr().out


def test_train_cv_compare_commands(tmp_path, capsys):
    from emclassify import synth

    data = tmp_path / "data"
    synth.generate(data, "lamellarity", 45, seed=1, proportions=(0.4, 0.4, 0.2))
    fast = ["--size", "24", "--epochs", "1", "--batch-size", "16"]
    assert main(["train", str(data), "--arch", "lipnet1", *fast, "--out", str(tmp_path / "m.safetensors")]) == 0
    assert "validation (" in capsys.readouterr().out
    assert main(["cv", str(data), "--arch", "lipnet1", "--folds", "2", *fast, "--out", str(tmp_path / "cv")]) == 0
    assert json.loads((tmp_path / "cv" / "metrics.json").read_text())["n_folds"] == 2
    assert main(["compare", str(data), "--archs", "lipnet1,svm", "--folds", "2", *fast,
                 "--out", str(tmp_path / "cmp")]) == 0
    assert "lipnet1 vs svm:" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.safetensors")]) == 4
    with pytest.raises(SystemExit) as e:  # argparse rejects an unknown strategy by name
        main(["cv", str(data), "--balance", "magic", "--out", str(tmp_path / "y")])
    assert e.value.code == 2


def test_gui_without_pyside6_says_how_to_install_it(monkeypatch, capsys):
    import builtins

    from emclassify_gui.app import main as gui_main

    real_import = builtins.__import__

    def no_pyside(name, *args, **kwargs):
        if name == "PySide6" or name.startswith("PySide6."):
            raise ImportError("No module named 'PySide6'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyside)
    assert gui_main([]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'emclassify[gui]'" in err


def test_help_starts_without_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom emclassify.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "usage: emclassify" in r.stdout


def test_defaults_module_names_every_architecture():
    from emclassify.defaults import ARCH_NAMES
    from emclassify.models import FEATURE_SUFFIX, list_archs

    listed = set(ARCH_NAMES) - {"<cnn>+features"}
    assert listed == {a for a in list_archs() if not a.endswith(FEATURE_SUFFIX)}
