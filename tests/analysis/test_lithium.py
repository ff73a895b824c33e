"""Li-K profile, Li maximum and electrode width against the known synthetic profile (§3.5, [Y14])."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis import AnalysisError, LiParams, SlitGeometry, li_profile


def _geom(synth) -> SlitGeometry:
    return SlitGeometry(interface_m=synth.INTERFACE_M, pt_side="low")


def test_li_profile_recovered_within_5_percent_rms(synth, low_noisy):
    t = synth.truth()
    res = li_profile(low_noisy, synth.LOW, synth.POS, _geom(synth))
    e = t.distance_m >= 0
    rel = (res.c_rel[e] - t.c_rel[e]) / t.c_rel[e]
    assert np.sqrt(np.mean(rel**2)) < 0.05
    # the stated 1-sigma matches the scatter in the flat parent region (within 25 %)
    par = res.parent_rows
    assert np.std(res.c_rel[par], ddof=1) == pytest.approx(np.mean(res.c_rel_sigma[par]), rel=0.25)


def test_li_maximum_and_electrode_width(synth, low_noisy):
    t = synth.truth()
    res = li_profile(low_noisy, synth.LOW, synth.POS, _geom(synth))
    assert res.c_max == pytest.approx(8.5, rel=0.03)  # 8.5 c0 at Pt [Y14]
    # the profile falls from Pt: the maximum is the first row outside the excluded Pt-blur band
    assert LiParams().max_min_distance_m <= res.c_max_distance_m < LiParams().max_min_distance_m + synth.ROW_M
    assert abs(res.electrode_width_m - t.width_m) < 2 * synth.ROW_M  # 381 nm, §3.5


def test_absolute_excess_threshold_gives_wider_layer(synth):
    """With c/c0 > 1.5 as the edge the layer ends at 251 nm sqrt(ln 15) = 413 nm."""
    low = synth.low_image(None)
    res = li_profile(low, synth.LOW, synth.POS, _geom(synth), LiParams(width_threshold=0.5, width_threshold_mode="excess"))
    assert abs(res.electrode_width_m - 251e-9 * np.sqrt(np.log(15.0))) < synth.ROW_M


def test_pt_on_the_high_side_gives_the_same_profile(synth, low_noisy):
    flipped = low_noisy[::-1]
    pos = synth.POS
    geom = SlitGeometry(interface_m=pos.values_m[-1] - synth.INTERFACE_M, pt_side="high")
    a = li_profile(low_noisy, synth.LOW, pos, _geom(synth))
    b = li_profile(flipped, synth.LOW, pos, geom)
    assert b.electrode_width_m == pytest.approx(a.electrode_width_m, rel=1e-9)
    assert b.c_max == pytest.approx(a.c_max)


def test_parent_region_must_exist(synth, low_noisy):
    with pytest.raises(AnalysisError, match="parent region"):
        li_profile(low_noisy, synth.LOW, synth.POS, _geom(synth), LiParams(parent_distance_m=(5e-6, 6e-6)))
