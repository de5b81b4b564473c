"""Adjusted prevalence recovers a known mix on synthetic data within its interval."""
from __future__ import annotations

import numpy as np
import pytest

from emclassify.metrics import confusion_matrix
from emclassify.prevalence import adjusted_prevalence


def simulate(p_true, m_rows, n, rng):
    truth = rng.choice(len(p_true), size=n, p=p_true)
    pred = np.array([rng.choice(len(p_true), p=m_rows[t]) for t in truth])
    return truth, pred


def test_exact_inversion_without_noise():
    cm = np.array([[90, 10, 0], [20, 75, 5], [0, 10, 90]])
    m = cm / cm.sum(1, keepdims=True)
    p = np.array([0.7, 0.2, 0.1])
    counts = np.round(m.T @ p * 100000).astype(int)
    r = adjusted_prevalence(counts, cm, ["a", "b", "c"], n_boot=200)
    for c, v in zip("abc", p):
        assert r["classes"][c]["percent"] == pytest.approx(100 * v, abs=0.05)


def test_recovers_known_mix_within_interval_where_raw_counts_fail():
    rng = np.random.default_rng(0)
    m_rows = np.array([[0.92, 0.05, 0.03], [0.15, 0.80, 0.05], [0.10, 0.10, 0.80]])
    # held-out set with known labels -> the card's confusion matrix
    t_val, p_val = simulate([0.6, 0.3, 0.1], m_rows, 3000, rng)
    cm = confusion_matrix(t_val, p_val, 3)
    # a "folder" of known composition: 87 / 12 / 1 %
    p_true = np.array([0.87, 0.12, 0.01])
    _, pred = simulate(p_true, m_rows, 4000, rng)
    r = adjusted_prevalence(np.bincount(pred, minlength=3), cm, ["uni", "multi", "unc"])
    for c, v in zip(["uni", "multi", "unc"], p_true):
        lo, hi = r["classes"][c]["ci95"]
        assert lo <= 100 * v <= hi, (c, lo, 100 * v, hi)
    # the raw count for the rare class is far off (false positives), the adjusted one is not
    raw = r["classes"]["unc"]["raw_percent"]
    assert abs(raw - 1.0) > 2 and abs(r["classes"]["unc"]["percent"] - 1.0) < 1.0


def test_estimates_are_a_distribution_and_empty_input():
    cm = np.array([[5, 5], [5, 5]])  # an uninformative classifier
    r = adjusted_prevalence([10, 0], cm, ["a", "b"], n_boot=100)
    ps = [r["classes"][c]["percent"] for c in "ab"]
    assert all(0 <= p <= 100 for p in ps) and sum(ps) == pytest.approx(100)
    assert adjusted_prevalence([0, 0], cm, ["a", "b"])["classes"]["a"]["percent"] is None


def test_one_file_folder_has_an_interval_of_nonzero_width():
    cm = np.array([[90, 10, 0], [20, 75, 5], [0, 10, 90]])
    r = adjusted_prevalence([1, 0, 0], cm, ["a", "b", "c"], n_boot=500)
    for c in "abc":
        lo, hi = r["classes"][c]["ci95"]
        assert hi - lo > 5, (c, lo, hi)   # one particle says little about a folder's composition


def test_class_never_predicted_in_a_small_folder_is_not_certainly_absent():
    cm = np.array([[90, 10, 0], [20, 75, 5], [0, 10, 90]])
    r = adjusted_prevalence([5, 3, 0], cm, ["a", "b", "c"], n_boot=500)
    lo, hi = r["classes"]["c"]["ci95"]
    assert lo == pytest.approx(0, abs=1e-6) and hi > 5


def test_class_absent_from_the_held_out_data_carries_its_uncertainty():
    seen = np.array([[90, 10, 0], [20, 75, 5], [0, 10, 90]])
    unseen = seen.copy()
    unseen[2] = 0   # the card's held-out data had no particle of class c
    counts = [60, 30, 10]
    known = adjusted_prevalence(counts, seen, ["a", "b", "c"], n_boot=500)
    unknown = adjusted_prevalence(counts, unseen, ["a", "b", "c"], n_boot=500)
    assert unknown["unseen_classes"] == ["c"]
    width = lambda r, c: r["classes"][c]["ci95"][1] - r["classes"][c]["ci95"][0]  # noqa: E731
    assert width(unknown, "c") > 1.5 * width(known, "c")


def test_intervals_cover_the_true_composition_in_simulation():
    """Folders of known composition (10 to 5,000 particles, three mixes incl. a 1 % and an absent class),
    predicted through a known confusion process; the card's confusion matrix is itself a finite held-out
    sample. The 95 % intervals must cover each folder's true class fractions at least 93 % of the time."""
    rng = np.random.default_rng(2026)
    rates = np.array([[0.92, 0.05, 0.03], [0.15, 0.80, 0.05], [0.10, 0.10, 0.80]])
    held_out = [300, 60, 10]
    mixes = [[0.87, 0.12, 0.01], [0.5, 0.3, 0.2], [0.97, 0.0, 0.03]]
    covered, sims = [], 0
    for n in (10, 50, 200, 1000, 5000):
        for p in mixes:
            for s in range(15):
                cm = np.stack([rng.multinomial(held_out[i], rates[i]) for i in range(3)])
                truth = rng.multinomial(n, p)
                pred = sum(rng.multinomial(truth[i], rates[i]) for i in range(3))
                r = adjusted_prevalence(pred, cm, ["a", "b", "c"], n_boot=400, seed=s)
                for i, c in enumerate("abc"):
                    lo, hi = r["classes"][c]["ci95"]
                    covered.append(lo - 1e-9 <= 100 * truth[i] / n <= hi + 1e-9)
                sims += 1
    assert sims >= 200
    assert np.mean(covered) >= 0.93, np.mean(covered)


def test_a_large_folder_where_a_class_is_never_predicted_still_has_an_interval():
    """10,404 particles, none predicted as b and 34 as c, all of which the model's false-positive
    rates explain: the estimate is 100 / 0 / 0 %, but the folder cannot show that the preparation
    holds no b or c at all, so the intervals are not points (they were [100, 100] and [0, 0])."""
    cm = np.array([[900, 30, 5], [40, 100, 3], [2, 2, 4]])
    r = adjusted_prevalence([10370, 0, 34], cm, ["a", "b", "c"], n_boot=500)
    assert r["classes"]["a"]["percent"] == pytest.approx(100) and r["classes"]["b"]["percent"] == pytest.approx(0)
    lo, hi = r["classes"]["a"]["ci95"]
    assert 99 < lo < 100 and hi == pytest.approx(100)
    for c in "bc":
        lo, hi = r["classes"][c]["ci95"]
        assert lo == pytest.approx(0) and 0 < hi < 1, (c, lo, hi)
