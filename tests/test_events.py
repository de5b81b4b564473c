"""The typed progress protocol and its remaining-time estimate."""
from __future__ import annotations

import pytest

from emclassify.events import RemainingTime, format_seconds


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_remaining_time_counts_epochs_and_per_run_overhead():
    clock = FakeClock()
    rt = RemainingTime(runs=3, epochs=4, clock=clock)
    assert rt.remaining() is None  # nothing measured yet: no invented figure
    rt.run_started()
    clock.t += 10
    # first epoch of three runs of four: 3 epochs left in this run + 2 runs x 4 epochs, 10 s each
    assert rt.epoch_ended(10.0) == pytest.approx(110.0)
    for _ in range(3):
        clock.t += 10
        rt.epoch_ended(10.0)
    clock.t += 6  # baselines and test predictions after the epochs
    rt.run_ended()
    assert rt.remaining() == pytest.approx(2 * 4 * 10 + 2 * 6)
    # an early-stopped run: the estimate shrinks, never below what is left
    rt.run_started()
    clock.t += 20
    assert rt.epoch_ended(20.0) == pytest.approx(3 * 12 + 4 * 12 + 6)


def test_remaining_time_reaches_zero_at_the_last_epoch():
    rt = RemainingTime(runs=1, epochs=2, clock=FakeClock())
    rt.run_started()
    rt.epoch_ended(1.0)
    assert rt.epoch_ended(1.0) == 0


@pytest.mark.parametrize("seconds,text", [(None, "--"), (4.4, "4 s"), (89, "89 s"), (600, "10 min"),
                                          (3900, "1 h 05 min")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
