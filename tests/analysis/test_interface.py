"""Locating the Pt/electrolyte interface from an electrolyte-only signal (Ti-L2,3 counts)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from insitem.analysis.axes import PositionAxis
from insitem.analysis.profiles import locate_interface

ROW_M = 5.70e-9
POS = PositionAxis(offset_m=0.0, scale_m=ROW_M, size=330)
TRUE_M = 70.3 * ROW_M  # between rows


def _signal(rng: np.random.Generator, noise: float) -> np.ndarray:
    """0 in Pt, a step blurred by 20 nm (chromatic blur, physics.md §1.7) to 0.8 next to Pt
    (the electrode reads lower Ti-L counts), rising to 1.0 in the far electrolyte."""
    x = POS.values_m
    level = 0.8 + 0.2 * np.clip((x - TRUE_M) / 300e-9, 0.0, 1.0)
    return level * ndtr((x - TRUE_M) / 20e-9) + noise * rng.standard_normal(x.size)


def test_noise_free_blurred_step_with_a_lower_local_level_is_found_to_a_fifth_of_a_row() -> None:
    g = locate_interface(_signal(np.random.default_rng(0), 0.0), POS)
    assert g.interface_m == pytest.approx(TRUE_M, abs=0.2 * ROW_M)
    # the bare half-of-far-level crossing is biased by the lower local level
    crossing = locate_interface(_signal(np.random.default_rng(0), 0.0), POS, fit_half_width_m=None)
    assert abs(crossing.interface_m - TRUE_M) > 0.5 * ROW_M


def test_ten_percent_row_noise_keeps_the_fitted_interface_within_two_rows_and_beats_the_crossing() -> None:
    fit, cross = [], []
    for k in range(40):
        v = _signal(np.random.default_rng(k), 0.1)
        fit.append(locate_interface(v, POS).interface_m - TRUE_M)
        cross.append(locate_interface(v, POS, fit_half_width_m=None).interface_m - TRUE_M)
    assert np.max(np.abs(fit)) < 2 * ROW_M  # issue 6: Ti boundary within 2 rows rests on this
    assert np.sqrt(np.mean(np.square(fit))) < 0.8 * np.sqrt(np.mean(np.square(cross)))


def test_pt_on_the_high_side() -> None:
    x = POS.values_m
    v = ndtr((TRUE_M - x) / 20e-9)
    assert locate_interface(v, POS, pt_side="high").interface_m == pytest.approx(TRUE_M, abs=0.1 * ROW_M)
