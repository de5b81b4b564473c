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

from emclassify.training.stopping import EpochSelector, late_gain


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


_THREAD_FAULTS = """
import resource, threading, numpy as np
from emclassify.runtime import reuse_freed_memory
reuse_freed_memory()
faults = []
def work():
    for _ in range(4):  # a 100 MB block, as a finder tile's activations, freed and allocated again
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        np.ones(100 * 2**20 // 8).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(sum(faults[1:]))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the allocator setting is made on glibc only")
def test_a_worker_threads_large_blocks_are_reused_not_mapped_again():
    """The reason for the setting, in a worker thread (the GUI's and the micrograph finder's): a
    100 MB block touched again after its first use costs no new page faults with it; without it,
    every use faults its pages in again (fewer than its 25,600 small pages where the kernel maps
    huge pages, but as many each time)."""
    def faults(env_value):
        env = {**os.environ, "EMCLASSIFY_MALLOC_TUNING": env_value}
        return int(subprocess.run([sys.executable, "-c", _THREAD_FAULTS], env=env, capture_output=True, text=True,
                                  check=True).stdout.split()[-1])
    untuned = faults("0")
    assert untuned >= 3 * 40  # three uses of at least 40 faults each (2 MiB huge pages: ~50)
    assert faults("1") * 4 < untuned


def test_late_gain_tells_a_rising_curve_from_a_level_one():
    # the NanoShapes CV's fold 1 (seventh round): level from epoch 15, the last epoch kept by a hair
    level = [0.7325, 0.7904, 0.84, 0.9136, 0.8819, 0.8383, 0.894, 0.9396, 0.9057, 0.9371, 0.9445, 0.9112,
             0.9313, 0.9146, 0.9543, 0.9625, 0.9478, 0.9549, 0.9502, 0.957, 0.9497, 0.9546, 0.9546, 0.9581]
    sel, best, _ = run(level, patience=8)
    assert best == 24  # the last epoch is kept ...
    assert 0 < late_gain(level, 8) < 0.01  # ... but the curve had levelled off
    rising = [0.4 + 0.03 * e for e in range(12)]
    assert late_gain(rising, 4) == pytest.approx(0.03 * 3.5)  # epochs 11-12 (mean at 11.5) against epoch 8
    assert late_gain(rising[:4], 4) is None  # no epoch a patience before the last
    assert late_gain([0.9, 0.8, 0.7, 0.6, 0.5], 2) < 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=30), st.integers(1, 10))
def test_late_gain_is_the_last_neighbour_mean_over_the_best_early_one(scores, window):
    gain = late_gain(scores, window)
    n = len(scores)
    if n - window < 1:
        assert gain is None
        return
    last = (scores[-2] + scores[-1]) / 2
    early = max(neighbour_mean(scores, i) for i in range(n - window))
    assert gain == pytest.approx(last - early)
