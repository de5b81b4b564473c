"""Folds (stratified, group-aware, deterministic), paired tests, and CV end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emclassify import synth
from emclassify.evaluation import compare, cross_validate, make_folds, mcnemar_exact, paired_fold_test
from emclassify.cv_report import write_compare_report, write_cv_report
from emclassify.io import load_dataset
from emclassify.preprocess import PreprocessConfig
from emclassify.training import TrainConfig


def test_stratified_folds_balance_classes_and_are_deterministic():
    y = np.array([0] * 50 + [1] * 25 + [2] * 5)
    f1 = make_folds(y, None, 5, seed=3)
    assert (make_folds(y, None, 5, seed=3) == f1).all()
    assert not (make_folds(y, None, 5, seed=4) == f1).all()
    for k in range(5):
        counts = np.bincount(y[f1 == k], minlength=3)
        assert counts.tolist() == [10, 5, 1]


def test_group_aware_folds_never_split_a_group():
    rng = np.random.default_rng(0)
    groups = [f"m{i // 10}" for i in range(200)]          # 20 micrographs of 10 particles
    y = np.array([int(g[1:]) % 3 for g in groups])        # class correlated with micrograph
    y[rng.random(200) < 0.2] = 0
    folds = make_folds(y, groups, 5, seed=1)
    for g in set(groups):
        assert len({folds[i] for i in range(200) if groups[i] == g}) == 1
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert (make_folds(y, groups, 5, seed=1) == folds).all()


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="only 3 groups"):
        make_folds([0, 1] * 6, ["a", "b", "c"] * 4, 5, 0)


def test_mcnemar_and_fold_ttest():
    a = np.array([True] * 20 + [False] * 5)
    b = np.array([True] * 10 + [False] * 15)
    r = mcnemar_exact(a, b)
    assert (r["a_only_correct"], r["b_only_correct"]) == (10, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    t = paired_fold_test([0.8, 0.82, 0.79, 0.85], [0.7, 0.71, 0.74, 0.72])
    # differences .10 .11 .05 .13: mean .0975, sd .034034 -> t = .0975 / (.034034 / 2) = 5.7296
    assert t["mean_difference"] == pytest.approx(0.0975) and t["t"] == pytest.approx(5.7296, abs=1e-3)
    assert 0.01 < t["p_value"] < 0.05
    assert paired_fold_test([0.5, 0.6], [0.5, 0.6])["p_value"] == 1.0


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, "encapsulation", 90, seed=5, proportions=(0.4, 0.4, 0.2))
    return load_dataset(root)


FAST = dict(epochs=2, batch_size=16, patience=2, device="cpu")


def test_cv_end_to_end_on_synthetic_set(small_synth, tmp_path):
    pcfg = PreprocessConfig(mode="crop", size=24)
    cfg = TrainConfig(arch="lipnet1", **FAST)
    events = []
    res = cross_validate(small_synth, pcfg, cfg, k=3, progress=events.append)
    kinds = [type(e).__name__ for e in events]
    assert {"Decoding", "FoldStarted", "EpochEnded", "FoldEnded"} <= set(kinds)
    assert kinds.index("Decoding") < kinds.index("FoldStarted") < kinds.index("EpochEnded") < kinds.index("FoldEnded")
    epochs = [e for e in events if type(e).__name__ == "EpochEnded"]
    assert all(e.fold is not None and e.folds == 3 and e.arch == "lipnet1" for e in epochs)
    # the remaining-time estimate exists from the first epoch on and reaches zero at the last one
    assert epochs[0].remaining_s is not None and epochs[0].remaining_s > 0 and epochs[-1].remaining_s == 0
    m = res.metrics_dict()
    assert m["classes"] == ["full", "empty", "uncertain"] and m["n_samples"] == 90
    assert np.asarray(m["confusion_matrix"]).sum() == 90
    assert set(m["per_class"]["full"]) == {"tpr", "tnr", "ppv", "npv", "f1", "support"}
    assert len(m["folds"]) == 3 and set(m["mean_sd"]["macro_f1"]) == {"mean", "sd"}
    assert m["settings"]["group_aware"] is True
    # groups (synthetic micrographs) never on both sides
    by_group = {}
    for s, f in zip(res.samples, res.folds):
        by_group.setdefault(s.group, set()).add(int(f))
    assert all(len(v) == 1 for v in by_group.values())
    paths = write_cv_report(res, tmp_path / "cv")
    saved = json.loads(paths["metrics"].read_text())
    assert saved["accuracy"] == m["accuracy"]
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![confusion matrix](confusion.png)" in paths["report"].read_text()
    rows = paths["predictions"].read_text().splitlines()
    assert rows[0].startswith("path,group,fold,true,predicted,prob_full,prob_empty") and len(rows) == 91
    # same seed, same folds, same numbers
    again = cross_validate(small_synth, pcfg, cfg, k=3)
    assert (again.folds == res.folds).all()
    np.testing.assert_allclose(again.probabilities, res.probabilities, atol=1e-6)


def test_compare_runs_models_on_identical_folds(small_synth, tmp_path):
    pcfg = PreprocessConfig(mode="crop", size=24)
    comp = compare(small_synth, ["lipnet1", "svm"], pcfg, TrainConfig(**FAST), k=3)
    assert [r.arch for r in comp.results] == ["lipnet1", "svm"]
    assert (comp.results[0].folds == comp.results[1].folds).all()
    t = comp.tests[0]
    assert {"mcnemar", "fold_macro_f1_ttest", "verdict", "significant"} <= set(t)
    paths = write_compare_report(comp, tmp_path / "cmp")
    text = paths["report"].read_text()
    assert "lipnet1" in text and "McNemar" in text
    assert (tmp_path / "cmp" / "svm" / "metrics.json").is_file()


def test_cv_on_nanoshapes_subset(nanoshapes, tmp_path):
    """Real TEM particles: a group-aware 3-fold CV of the SVM baseline on 6 micrographs holding all 3 shapes."""
    full = load_dataset(nanoshapes)
    classes_of = {}
    for s in full.samples:
        classes_of.setdefault(s.group, set()).add(s.label)
    keep = sorted(g for g, c in classes_of.items() if len(c) == 3)[:6]
    full.samples = [s for s in full.samples if s.group in keep]
    res = cross_validate(full, PreprocessConfig(mode="crop", size=32), TrainConfig(arch="svm"), k=3)
    m = res.metrics_dict()
    assert m["n_samples"] == len(full.samples)
    assert m["accuracy"] > 0.6  # three shapes: chance is ~0.37


def test_training_curves_say_no_epochs_only_when_there_are_none():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from emclassify.cv_report import draw_curves
    from emclassify.training import EpochLog

    hist = [EpochLog(e, 3, 1.0 / e, 0.5, 0.5 + 0.1 * e, 0.6, 1.0) for e in (1, 2, 3)]

    def texts(fig):
        return [t.get_text() for ax in fig.axes for t in ax.texts]

    one, folds, none = Figure(), Figure(), Figure()
    draw_curves(one, [hist], [2])
    draw_curves(folds, [hist, hist], [2, 3])
    draw_curves(none, [[]], [0])
    assert not texts(one) and one.axes[1].get_legend() is None  # one run: nothing to tell apart
    assert folds.axes[1].get_legend() is not None and not texts(folds)
    assert any("no epochs" in t for t in texts(none))
    ticks = one.axes[0].xaxis.get_major_locator().tick_values(1, 3)
    assert all(float(t).is_integer() for t in ticks)
