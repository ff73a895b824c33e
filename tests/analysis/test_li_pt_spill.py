"""Pt spill into the Li-K window (analysis/lithium.py, docs/decisions/0009): the blur along the slit
carries Pt O3 (51.7 eV) and O2 (65.3 eV) from the Pt rows into the first electrolyte rows, where the
power-law edge counts read it as Li. The beam removes Li but not Pt, so that spill grows in c0 units
over an in-situ run. The two-reference fit (Li-K + Pt) takes it out."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis import EnergyAxis, LiParams, edge_intensity
from insitem.analysis.lithium import li_reference, pt_unmix

AXIS = EnergyAxis(offset_eV=35.0, scale_eV=0.1, size=2048)
ROW_M = 5.7e-9
E = AXIS.values_eV
COUNTS = 2e8  # zero-loss counts per row (sets the fit's weights; the spectra are noise-free)


def _step(E: np.ndarray, onset: float, width: float) -> np.ndarray:
    return 0.5 + np.arctan((E - onset) / width) / np.pi


def _li_k() -> np.ndarray:
    """Li-K per unit c/c0 per zero-loss count: step at 57 eV plus the 61.5 eV peak (physics.md §1.8)."""
    s = 3.0 / 2.3548
    return 1e-6 * (_step(E, 57.0, 1.0) * (E > 55.0) + 3.0 * np.exp(-0.5 * ((E - 61.5) / s) ** 2) / (s * np.sqrt(2 * np.pi)))


def _electrolyte_tail() -> np.ndarray:
    x = np.log(E / 50.0)
    return 2e-4 * np.exp(-4.4 * x + 1.5 * x**2)  # Drude tail, not a power law


def _pt() -> np.ndarray:
    """Pt per zero-loss count: a steeper tail plus the delayed O3 (51.7 eV) and O2 (65.3 eV) edges
    (physics.md §1.6), sized so that a Pt row reads ~6 c0 of apparent Li."""
    x = np.log(E / 50.0)
    return 2.5e-4 * np.exp(-4.9 * x + 1.0 * x**2) + 8e-6 * _step(E, 53.5, 1.5) * (E > 51.7) + 4e-6 * _step(E, 66.5, 1.5) * (E > 65.3)


def _blur(rows: np.ndarray) -> np.ndarray:
    """Lorentzian blur along the slit (gamma 1 row, +-12 rows, edges repeated), physics.md §1.7."""
    k = 1.0 / (1.0 + np.arange(-12, 13) ** 2)
    k /= k.sum()
    padded = np.concatenate([np.repeat(rows[:1], 12, 0), rows, np.repeat(rows[-1:], 12, 0)])
    return np.stack([k @ padded[i : i + 25] for i in range(rows.shape[0])])


def _field(li_retained: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d, c/c0 blurred like the spectra, SSD per zero-loss count): 200 nm of Pt, then the electrolyte
    with a [Y14]-like profile; Li scaled by li_retained (beam loss). The fit removes Pt, not the blur,
    so its target is the blurred Li (Pt rows hold none)."""
    d = (np.arange(200) - 35) * ROW_M
    c = np.where(d >= 0, 1.0 + 7.5 * np.exp(-((np.maximum(d, 0.0) / 251e-9) ** 2)), 0.0)
    pt = d < 0
    spec = np.where(pt[:, None], _pt()[None, :], _electrolyte_tail()[None, :] + li_retained * c[:, None] * _li_k()[None, :])
    spec = _blur(spec)
    return d, _blur(c[:, None])[:, 0], spec


def _near_pt(li_retained: float) -> tuple[float, float, float]:
    """(truth, power-law edge counts, two-reference fit): mean c/c0 over 0-50 nm, with the parent
    level from the reference fit in both analyses."""
    d, c, spec = _field(li_retained)
    p = LiParams()
    var = np.full(d.size, 1.0 / COUNTS)
    edge = edge_intensity(spec, AXIS, p.pre_edge_eV, p.signal_eV, p.method, 1.0 / COUNTS)
    parent = d >= 0.75 * d.max()
    S = edge.intensity
    ref = li_reference(spec, AXIS, edge, S / S[parent].mean(), d, parent, p, var)
    assert ref is not None
    mix = pt_unmix(spec, AXIS, d, ref, p, var)
    assert mix is not None
    plain = 1.0 + (S - S[parent].mean()) / ref.level
    unmixed = 1.0 + mix.alpha * ref.excess / ref.level
    near = (d >= 0) & (d <= 50e-9)
    assert np.mean(mix.beta[(d > -150e-9) & (d < -30e-9)]) == pytest.approx(1.0, abs=0.05)  # the Pt reference rows
    return float(c[near].mean()), float(plain[near].mean()), float(unmixed[near].mean())


def test_pt_spill_is_read_as_li_by_edge_counts_and_removed_by_the_two_reference_fit() -> None:
    truth, plain, unmixed = _near_pt(1.0)
    assert plain > truth + 0.5
    assert unmixed == pytest.approx(truth, abs=0.3)


def test_beam_loss_of_li_does_not_make_the_unmixed_li_near_pt_drift() -> None:
    """Half the Li gone, Pt unchanged (physics.md §5): c/c0 must not move, since the parent lost the
    same share. The edge counts drift up (the Pt rows read 5.8 -> 11.4 c0, as in the in-situ dry run);
    the fit does not. Noise-free: with counting noise the 0-50 nm mean scatters by ~0.3 c0 at half Li."""
    _, plain_1, unmixed_1 = _near_pt(1.0)
    _, plain_half, unmixed_half = _near_pt(0.5)
    assert plain_half - plain_1 > 0.4
    assert unmixed_half - unmixed_1 == pytest.approx(0.0, abs=0.05)
