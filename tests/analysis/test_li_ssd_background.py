"""The log-quadratic background of the Li-K analysis on the single-scattering distribution."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis.axes import EnergyAxis
from insitem.analysis.lithium import _log_quadratic_edge

AX = EnergyAxis(offset_eV=30.0, scale_eV=0.1, size=900)  # 30-120 eV channel centres
E = AX.values_eV


def _curved_background(rows: int) -> np.ndarray:
    """A Drude-like tail: ln B quadratic in ln E (local slope 4.4 at 45 eV falling to 3.5 at 70 eV)."""
    x = np.log(E / 45.0)
    slope_45, curvature = -4.4, 2.0
    return np.tile(1e6 * np.exp(slope_45 * x + curvature * x * x), (rows, 1))


def test_recovers_an_edge_exactly_on_a_log_quadratic_background() -> None:
    B = _curved_background(3)
    edge = np.outer([0.0, 1.0, 8.5], 300.0 * (E >= 55.0) * np.exp(-(E - 55.0) / 20.0))
    res = _log_quadratic_edge(B + edge, AX, (40.0, 54.0), (55.0, 70.0), 1.0)
    truth = edge[:, AX.window(55.0, 70.0)].sum(axis=1)
    np.testing.assert_allclose(res.intensity, truth, atol=1e-6 * B[0, (E > 55) & (E < 70)].sum())


def test_noise_estimate_matches_the_scatter_of_poisson_realisations() -> None:
    rng = np.random.default_rng(7)
    mean = _curved_background(1)[0]
    data = rng.poisson(np.tile(mean, (400, 1))).astype(float)
    res = _log_quadratic_edge(data, AX, (40.0, 54.0), (55.0, 70.0), 1.0)
    assert abs(np.mean(res.intensity)) < 3 * np.std(res.intensity) / np.sqrt(400)  # unbiased
    assert np.median(res.sigma) == pytest.approx(np.std(res.intensity), rel=0.15)
    assert np.median(res.h_factor) > 1.0
