"""The parent's Li by the MLLS reference fit (analysis/lithium.py): a background under Li-K that
is not a power law survives the power-law subtraction in every row and compresses c/c0; the
electrode-minus-parent reference fit measures the parent's Li without it."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis import EnergyAxis, LiParams, edge_intensity
from insitem.analysis.lithium import parent_li_by_reference, shallow_edge

AXIS = EnergyAxis(offset_eV=35.0, scale_eV=0.1, size=2048)
ROW_M = 5.7e-9


def _gauss(E: np.ndarray, c: float, fwhm: float) -> np.ndarray:
    s = fwhm / 2.3548
    return np.exp(-0.5 * ((E - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def _li_k(E: np.ndarray) -> np.ndarray:
    """Li-K per unit c/c0 (per zero-loss count per channel): step at 57 eV + peaks (physics.md §1.8)."""
    return 1e-6 * ((0.5 + np.arctan((E - 57.0) / 1.0) / np.pi) * (E > 55.0) + 3.0 * _gauss(E, 61.5, 3.0))


def _rows(c_rel: np.ndarray) -> np.ndarray:
    """SSD per zero-loss count: a Drude-like tail whose local slope falls with E (ln B quadratic in
    ln E, not a power law) plus c/c0 x Li-K; the same non-Li part in every row."""
    E = AXIS.values_eV
    x = np.log(E / 50.0)
    tail = 2e-4 * np.exp(-4.4 * x + 1.5 * x**2)
    return tail[None, :] + c_rel[:, None] * _li_k(E)[None, :]


def _profile(c_true: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, object, np.ndarray]:
    spec = _rows(c_true)
    counts_per_unit = 2e8  # zero-loss counts per row: Poisson noise at the ex-situ run's level
    if rng is not None:
        spec = rng.poisson(spec * counts_per_unit) / counts_per_unit
    p = LiParams()
    edge = edge_intensity(spec, AXIS, p.pre_edge_eV, p.signal_eV, p.method, 1.0 / counts_per_unit)
    return spec, edge, np.full(c_true.size, 1.0 / counts_per_unit)


def _truth(n: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.arange(n) * ROW_M
    c = 1.0 + 7.5 * np.exp(-((d / 251e-9) ** 2))  # [Y14]-like profile, physics.md §3.5
    parent = d >= 0.75 * d.max()
    return d, c, parent


@pytest.mark.parametrize("seed", [None, 1])
def test_reference_fit_measures_the_parents_li_that_the_power_law_overstates(seed) -> None:
    d, c, parent = _truth()
    rng = None if seed is None else np.random.default_rng(seed)
    spec, edge, var = _profile(c, rng)
    S = edge.intensity
    c_pre = S / S[parent].mean()
    true_parent_li = float(_li_k(AXIS.values_eV)[AXIS.window(*LiParams().signal_eV)].sum())
    # the power law leaves the tail's curvature under Li-K: the parent's counts overstate its Li
    assert S[parent].mean() / true_parent_li > 1.15
    level = parent_li_by_reference(spec, AXIS, edge, c_pre, d, parent, LiParams(), var)
    assert level == pytest.approx(true_parent_li, rel=0.03)
    c_fit = 1.0 + (S - S[parent].mean()) / level
    band = (d >= 30e-9) & (d < 100e-9)  # the electrode next to Pt
    assert c_fit[band].mean() == pytest.approx(c[band].mean(), rel=0.03)
    assert c_pre[band].mean() < 0.9 * c[band].mean()


def test_no_significant_electrode_gives_no_reference() -> None:
    """A flat profile has no electrode to take a Li-K reference from: None (the caller keeps the power law)."""
    d, _, parent = _truth()
    c = np.ones(d.size)
    spec, edge, var = _profile(c, np.random.default_rng(2))
    c_pre = edge.intensity / edge.intensity[parent].mean()
    assert parent_li_by_reference(spec, AXIS, edge, c_pre, d, parent, LiParams(), var) is None



def _arctan_step(E: np.ndarray) -> np.ndarray:
    """A Ti M1-like step unlike the analysis's generic edge: arctan rise at 59.5 eV, E^-2.5 fall."""
    return (0.5 + np.arctan((E - 59.5) / 1.2) / np.pi) * (E > 58.0) * (58.7 / E) ** 2.5


def _electrode_c_rel(step: np.ndarray, r: float, p: LiParams) -> float:
    """Noise-free electrode c/c0 (30-150 nm) of rows whose Li is scaled by r (knock-on loss) over a
    curved Drude tail plus a non-Li step that r leaves alone."""
    d, c, parent = _truth()
    E = AXIS.values_eV
    x = np.log(E / 50.0)
    spec = (2e-4 * np.exp(-4.4 * x + 1.5 * x**2) + step)[None, :] + r * c[:, None] * _li_k(E)[None, :]
    var = np.full(c.size, 5e-9)
    edge = edge_intensity(spec, AXIS, p.pre_edge_eV, p.signal_eV, p.method, 5e-9)
    S = edge.intensity
    level = parent_li_by_reference(spec, AXIS, edge, S / S[parent].mean(), d, parent, p, var)
    assert level is not None
    band = (d >= 30e-9) & (d < 150e-9)
    return float((1.0 + (S - S[parent].mean()) / level)[band].mean() / c[band].mean())


@pytest.mark.parametrize("shape", ["generic", "arctan"])
def test_fitting_the_ti_m1_step_stops_c_rel_drifting_as_the_beam_removes_li(shape: str) -> None:
    """Knock-on loss scales every row's Li by r but not the Ti M1 step, so a step left in the parent
    level compresses c/c0 by 1/(1 + residual/r) as the dose grows. Fitted with the step's own shape,
    c/c0 stays within 1.5 % from r = 1 to 0.4; with a different shape (arctan rise, E^-2.5) the drift
    is only reduced: the fit is as good as the edge shape it is given."""
    E = AXIS.values_eV
    step = 2e-7 * (shallow_edge(E, 58.7, 3.0) if shape == "generic" else _arctan_step(E))
    with_step, without = LiParams(), LiParams(reference_fit_edges_eV=())
    drift_with = _electrode_c_rel(step, 0.4, with_step) / _electrode_c_rel(step, 1.0, with_step)
    drift_without = _electrode_c_rel(step, 0.4, without) / _electrode_c_rel(step, 1.0, without)
    assert drift_without < 0.975
    if shape == "generic":
        assert drift_with == pytest.approx(1.0, abs=0.015)
        assert _electrode_c_rel(step, 1.0, with_step) == pytest.approx(1.0, abs=0.02)
    else:
        assert drift_without < drift_with < 1.0
