"""Which epoch a fit keeps and when it stops (emclassify.training.stopping), and the allocator
setting training makes (emclassify.runtime.reuse_freed_memory)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emclassify.training.stopping import EpochSelector


def run(scores, patience=100):
    """Feed ``scores`` epoch by epoch with the epoch number as the state; returns the selector, the
    state finish() returned and the epoch after which should_stop() first said yes (None: never)."""
    sel, stopped_after = EpochSelector(patience), None
    for epoch, s in enumerate(scores, 1):
        sel.add(s, epoch)
        if sel.should_stop():
            stopped_after, sel.best_when_stopped = epoch, sel.best_epoch
            break
    return sel, sel.finish(), stopped_after


def neighbour_mean(scores, i):
    """Mean of scores[i] and its neighbours, computed here from the list (0-based i)."""
    window = [scores[j] for j in (i - 1, i, i + 1) if 0 <= j < len(scores)]
    return sum(window) / len(window)


def test_a_one_epoch_jump_is_not_kept_over_a_plateau():
    # epoch 3 jumps (a rare particle or two), the network is better from epoch 6 on
    scores = [0.40, 0.50, 0.66, 0.55, 0.58, 0.63, 0.64, 0.63]
    sel, state, _ = run(scores)
    assert max(range(len(scores)), key=scores.__getitem__) == 2  # the plain maximum would keep epoch 3
    assert sel.best_epoch in (6, 7, 8) and state == sel.best_epoch
    assert sel.best_score == pytest.approx(max(neighbour_mean(scores, i) for i in range(len(scores))))


def test_steadily_improving_keeps_the_last_epoch():
    sel, state, stopped = run([0.1 * k for k in range(1, 9)])
    assert (sel.best_epoch, state, stopped) == (8, 8, None)


def test_stops_once_patience_epochs_with_final_scores_passed_the_best():
    # best at epoch 2 (neighbour mean 0.767; epoch 1's 0.75); every later window is worse
    scores = [0.6, 0.9, 0.8, 0.3, 0.3, 0.3, 0.3, 0.3]
    sel, state, stopped = run(scores, patience=3)
    assert sel.best_epoch == 2 and state == 2
    # epoch 2 + 3 epochs whose scores are final: epoch 5's is final once epoch 6 is in
    assert stopped == 6


def test_one_epoch_and_none():
    sel, state, stopped = run([0.42])
    assert (sel.best_epoch, state, stopped) == (1, 1, None)
    sel = EpochSelector(3)
    assert sel.finish() is None and sel.best_epoch == 0 and not sel.should_stop()


def test_nan_scores_count_as_zero():
    sel, state, _ = run([float("nan"), 0.5, 0.6])
    assert sel.best_epoch == 3 and state == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.integers(1, 6))
def test_kept_epoch_has_the_best_neighbour_mean_among_those_seen(scores, patience):
    sel, state, stopped = run(scores, patience)
    seen = scores[: stopped or len(scores)]
    means = [neighbour_mean(seen, i) for i in range(len(seen))]
    assert state == sel.best_epoch and 1 <= sel.best_epoch <= len(seen)
    assert sel.best_score == pytest.approx(means[sel.best_epoch - 1])
    assert sel.best_score >= max(means) - 1e-9
    # a later epoch replaces the kept one only when it is better: no earlier epoch beats it
    assert all(m <= sel.best_score + 1e-9 for m in means[: sel.best_epoch - 1])
    if stopped is not None:  # stopped once the best then was `patience` final epochs behind
        assert stopped - 1 - sel.best_when_stopped == patience


def _reuse_answer(env_value):
    env = {**os.environ, "EMCLASSIFY_MALLOC_TUNING": env_value}
    code = "from emclassify.runtime import reuse_freed_memory as r; print(r(), r())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the allocator setting is made on glibc only")
def test_reuse_freed_memory_on_glibc_and_its_opt_out():
    assert _reuse_answer("1") == ["True", "True"]
    assert _reuse_answer("0") == ["False", "False"]
