"""summarize(): the Fig. 6 quantities of [Y14] from one low-window and one core-window image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from insitem.analysis import summarize


def test_summary_locates_pt_and_reports_fig6_numbers(synth, low_noisy, core_noisy):
    t = synth.truth()
    ref = synth.core_image(np.random.default_rng(21))
    drifted = synth.core_image(np.random.default_rng(22), shift_eV=0.8)
    s = summarize(low_noisy, synth.LOW, drifted, synth.CORE, synth.POS, core_reference=ref)
    assert s.core_shift_eV == pytest.approx(0.8, abs=0.05)
    assert abs(s.geometry.interface_m - synth.INTERFACE_M) < 0.5 * synth.ROW_M  # found from the Ti signal
    assert s.c_max == pytest.approx(8.5, rel=0.03)
    assert abs(s.electrode_width_m - t.width_m) < 2 * synth.ROW_M
    assert abs(s.ti3_boundary_m - t.ti3_boundary_m) < 2 * synth.ROW_M
    assert s.ti3_shift_eV == pytest.approx(-1.7, abs=0.1)
    assert s.oo_range_m[0] == pytest.approx(0.280e-9, abs=0.003e-9)
    assert s.oo_range_m[1] == pytest.approx(0.310e-9, abs=0.003e-9)
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert len(d["li_c_rel"]) == synth.POS.size and d["ti3"].count(True) == int(s.ti.is_ti3.sum())
