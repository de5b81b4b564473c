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
        assert "usage: emclassify " + name in capsys.readouterr().out


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
