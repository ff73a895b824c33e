"""Li-K per zero-loss count of a window that starts above the zero-loss peak (analysis/lithium.py,
`zero_loss_ratio` and `li_k_per_zero_loss`), on spectra built from a known single-scattering
distribution by the Poisson law of plural scattering (Egerton [S:EG11] §3.7, physics.md §1.4)."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis.axes import EnergyAxis
from insitem.analysis.background import edge_intensity
from insitem.analysis.lithium import li_k_per_zero_loss, zero_loss_ratio

D = 0.1  # eV per channel
GRID = np.arange(-20.0, 400.0, D)  # a long grid for the exact transforms (ZLP at index of 0 eV)


def ssd(li: float) -> np.ndarray:
    """Single scattering per unit zero-loss intensity and eV: a Drude plasmon (25.5 eV, width 10 eV, the
    lamella's LiFePO4, physics-seed-systems.md B.1) holding t/lambda = 0.5, and a Li-K saw-tooth (onset 55 eV)
    of strength `li` (its integral over 55-100 eV)."""
    e = np.clip(GRID, 1e-6, None)
    drude = np.where(GRID > 3.8, e * 10.0 * 25.5**2 / ((e**2 - 25.5**2) ** 2 + (e * 10.0) ** 2), 0.0)
    drude *= 0.5 / (drude.sum() * D)
    edge = np.where(GRID > 55.0, -np.expm1(-(GRID - 55.0) / 2.0) * (55.0 / e) ** 3, 0.0)
    edge *= li / (edge[(GRID >= 55.0) & (GRID <= 100.0)].sum() * D)
    return drude + edge


def recorded(s: np.ndarray, i0: float) -> np.ndarray:
    """I0 [delta + S + S*S/2! + ...] (exp of the transform), blurred by a 1 eV FWHM resolution: counts per channel."""
    n = GRID.size
    k0 = int(np.argmin(np.abs(GRID)))
    sh = np.fft.rfft(np.roll(s * D, -k0), 2 * n)  # 0 eV at index 0, zero-padded to 2n (no wrap)
    res = np.exp(-0.5 * (np.fft.rfftfreq(2 * n, D) * 2 * np.pi * (1.0 / 2.3548)) ** 2)
    spec = np.fft.irfft(np.exp(sh) * res, 2 * n)
    return i0 * np.roll(spec, k0)[:n]


def window(full: np.ndarray, lo_eV: float) -> tuple[np.ndarray, EnergyAxis]:
    k = int(np.argmin(np.abs(GRID - lo_eV)))
    return full[k : k + 1024], EnergyAxis(offset_eV=float(GRID[k]), scale_eV=D, size=1024)


def test_li_k_per_zero_loss_of_a_window_without_the_zero_loss_peak() -> None:
    """The lamella's arrangement: a 2-104 eV window, and a -5-97 eV window that holds the zero-loss
    peak for the ratio. The Li-K per zero-loss count follows the Li exactly (to 3 %); what remains
    without Li is the power law's error under the Drude tail (a constant, +0.0006 here), and a power
    law on the recorded spectrum reads the Li-K negative (the double plasmon under the pre-edge)."""
    edge = ssd(1.0) - ssd(0.0)
    unit = edge[(GRID >= 55.95) & (GRID <= 70.05)].sum() * D  # Li-K per unit li inside 56-70 eV
    got = {}
    for li in (0.0, 0.002, 0.004):
        full = recorded(ssd(li), 1e6)
        zl, zl_axis = window(full, -5.0)
        spec, axis = window(full, 2.0)
        ratio = float(zero_loss_ratio(zl, zl_axis, zero_loss_below_eV=2.0)[0])
        assert ratio == pytest.approx(1e6 / full[(GRID >= 10.0) & (GRID <= 97.0)].sum(), rel=0.01)
        res = li_k_per_zero_loss(spec, axis, ratio)
        assert res.t_over_lambda[0] == pytest.approx(0.5 + li, abs=0.02)  # less the counts above 104 eV
        got[li] = float(res.per_zero_loss[0])
        if li > 0:
            assert float(edge_intensity(spec, axis, (44.0, 51.5), (56.0, 70.0)).intensity) < 0.0
    for li in (0.002, 0.004):
        assert got[li] - got[0.0] == pytest.approx(li * unit, rel=0.03)
    assert 0.0 < got[0.0] < 0.5 * got[0.004]
