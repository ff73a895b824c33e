"""O-K peak a/b and the O-O distance law (E_b - 529.0 eV) R^2 = 2.820 eV nm^2 [Y14]."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis import SlitGeometry, o_analysis, oo_distance_m, peak_b_eV


def test_peak_b_law_check_5():
    """physics.md §7 check 5: R = 0.310 nm -> 558.34 eV; and the inverse round trip."""
    assert float(peak_b_eV(0.310e-9)) == pytest.approx(558.34, abs=0.005)
    r = np.array([0.280, 0.288, 0.295, 0.310]) * 1e-9
    assert oo_distance_m(peak_b_eV(r)) == pytest.approx(r, rel=1e-12)
    assert np.isnan(oo_distance_m(528.0))


def test_oo_distance_within_0p003_nm_per_row(synth, core_noisy):
    t = synth.truth()
    res = o_analysis(core_noisy, synth.CORE, synth.POS, SlitGeometry(interface_m=synth.INTERFACE_M))
    e = t.distance_m >= 0
    err_nm = res.oo_distance_m[e] * 1e9 - t.r_nm[e]
    assert np.max(np.abs(err_nm)) < 0.003
    assert res.oo_range_m[0] == pytest.approx(0.280e-9, abs=0.002e-9)
    assert res.oo_range_m[1] == pytest.approx(0.310e-9, abs=0.003e-9)
    assert np.nanmean(res.peak_a_eV[e]) == pytest.approx(538.0, abs=0.1)
    assert np.all(np.isnan(res.peak_b_eV[~e]))
