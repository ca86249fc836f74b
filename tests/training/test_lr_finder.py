"""training.lr_finder: the lesson's sweep and its suggestion."""

import numpy as np
import pytest

from training import lr_finder
from training.cli import main


def test_sweep_rate_follows_the_lesson():
    assert lr_finder.sweep_rate(0) == pytest.approx(1e-4)
    assert lr_finder.sweep_rate(20) == pytest.approx(1e-3)
    assert lr_finder.sweep_rate(60) == pytest.approx(1e-1)


def test_suggestion_is_ten_times_below_the_minimum():
    rates = np.array([lr_finder.sweep_rate(e) for e in range(100)])
    losses = (np.log10(rates) + 2) ** 2 + 0.1  # minimum at lr = 1e-2
    losses[-5:] = np.nan  # a diverged tail must not count as a minimum
    sweep = lr_finder.LRSweep(rates, losses)
    step = 10 ** (1 / 20)  # one epoch of the sweep
    assert 1e-2 / step <= sweep.best_rate <= 1e-2 * step
    assert sweep.suggested_rate == pytest.approx(sweep.best_rate / 10)


def test_smoothing_ignores_a_single_spike():
    losses = np.array([1.0, 0.8, 0.6, 0.01, 0.5, 0.4, 0.3, 0.3, 0.35, 0.9, 1.2])
    smoothed = lr_finder.smooth(losses)
    assert int(np.argmin(losses)) == 3  # the raw minimum is the one-epoch spike
    assert int(np.argmin(smoothed)) in (5, 6, 7)  # the smoothed one is the real valley


@pytest.mark.slow
def test_lr_find_command_writes_plot_and_prints_rate(tmp_path, capsys):
    out = tmp_path / "lr.png"
    assert main(["lr-find", "circles", "--epochs", "60", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "suggested learning rate" in printed
    suggested = float(printed.split("suggested learning rate ")[1].split()[0])
    assert 1e-5 <= suggested <= 1e-1
    assert out.read_bytes().startswith(b"\x89PNG")
