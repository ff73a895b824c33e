"""Optics and beam laws of the simulated microscope (physics.md §0, §5, §6.4, §7 check 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import InstrumentError
from insitem.drivers.interfaces import Microscope
from insitem.simulators.microscope import SimMicroscope
from insitem.simulators.optics import MicroscopeState, OpticsParameters

E = 1.602176634e-19
PER_A2 = 1e20


def make(**kw: object) -> tuple[MicroscopeState, VirtualClock]:
    clock = VirtualClock()
    return MicroscopeState(OpticsParameters(**kw), clock), clock


# -- dose rate D = I / (e A), physics.md §5 -------------------------------------------------------


def test_dose_rate_check_10_one_nA_on_one_um_disc_is_79_5() -> None:
    """§7 check 10: 1 nA on a 1 um disc = 79.5 e/Å²/s."""
    st, _ = make(beam_current_A=1e-9, illuminated_diameter_m=1e-6)
    assert st.dose_rate_e_per_m2_s / PER_A2 == pytest.approx(79.5, abs=0.05)


@pytest.mark.parametrize(
    ("current_A", "diameter_m", "expected_e_per_A2_s"),
    [(1e-9, 3e-6, 8.8), (10e-9, 3e-6, 88.0), (0.1e-9, 2e-6, 2.0), (0.5e-9, 2e-6, 10.0)],
)
def test_dose_rate_table_of_section_5(current_A: float, diameter_m: float, expected_e_per_A2_s: float) -> None:
    st, _ = make(beam_current_A=current_A, illuminated_diameter_m=diameter_m)
    assert st.dose_rate_e_per_m2_s / PER_A2 == pytest.approx(expected_e_per_A2_s, rel=0.02)


def test_defaults_are_the_study_3_dose_rate_limit() -> None:
    """§6.4: default beam 0.5 nA over a 2 um disc ~ 10 e/Å²/s; formula I/(e π r²) exactly."""
    st, _ = make()
    assert st.dose_rate_e_per_m2_s == pytest.approx(0.5e-9 / (E * math.pi * (1e-6) ** 2), rel=1e-12)
    assert st.high_tension_V == 300e3


def test_dose_rate_scales_inversely_with_disc_area() -> None:
    st, _ = make()
    r0 = st.dose_rate_e_per_m2_s
    st.set_illuminated_diameter(4e-6)
    assert st.dose_rate_e_per_m2_s == pytest.approx(r0 / 4, rel=1e-12)


# -- dose accumulates only while unblanked (§5) ---------------------------------------------------


def test_starts_blanked_and_delivers_no_dose() -> None:
    st, clock = make()
    clock.advance(100.0)
    assert st.blanked
    assert st.total_dose_e_per_m2() == 0.0
    assert st.beam_on_fraction(0.0, 100.0) == 0.0


def test_dose_integrates_only_over_unblanked_intervals() -> None:
    st, clock = make()
    rate = st.dose_rate_e_per_m2_s
    clock.advance(10.0)
    st.set_blanked(False)  # on at 10
    clock.advance(30.0)
    st.set_blanked(True)  # off at 40
    clock.advance(50.0)
    st.set_blanked(False)  # on at 90
    clock.advance(5.0)
    st.set_blanked(True)  # off at 95
    clock.advance(5.0)  # now 100
    assert st.total_dose_e_per_m2() == pytest.approx(rate * 35.0, rel=1e-12)
    assert st.dose_e_per_m2(0.0, 10.0) == 0.0
    assert st.dose_e_per_m2(20.0, 30.0) == pytest.approx(rate * 10.0, rel=1e-12)
    assert st.dose_e_per_m2(35.0, 92.0) == pytest.approx(rate * 7.0, rel=1e-12)
    assert st.dose_e_per_m2(40.0, 90.0) == 0.0
    assert st.beam_on_fraction(0.0, 100.0) == pytest.approx(0.35, rel=1e-12)
    assert st.beam_on_time_s(0.0, 100.0) == pytest.approx(35.0, rel=1e-12)
    assert st.blank_intervals() == [(10.0, 40.0), (90.0, 95.0)]


def test_30_s_exposure_at_10_e_per_A2_s_gives_300_e_per_A2() -> None:
    """§5: dose per 30 s exposure at 10 e/Å²/s = 300 e/Å²."""
    st, clock = make()
    st.set_beam_current(10 * PER_A2 * E * st.illuminated_area_m2)  # exactly 10 e/Å²/s
    st.set_blanked(False)
    clock.advance(30.0)
    st.set_blanked(True)
    assert st.total_dose_e_per_m2() / PER_A2 == pytest.approx(300.0, rel=1e-12)


def test_current_change_while_unblanked_splits_the_dose_exactly() -> None:
    st, clock = make()
    r0 = st.dose_rate_e_per_m2_s
    st.set_blanked(False)
    clock.advance(10.0)
    st.set_beam_current(2 * st.beam_current_A)
    clock.advance(10.0)
    assert st.dose_e_per_m2(0.0, 20.0) == pytest.approx(r0 * 10 + 2 * r0 * 10, rel=1e-12)


def test_listeners_hear_blank_changes_with_clock_time_only_on_change() -> None:
    st, clock = make()
    heard: list[tuple[bool, float]] = []
    st.add_blank_listener(lambda b, t: heard.append((b, t)))
    clock.advance(3.0)
    st.set_blanked(False)
    st.set_blanked(False)  # no change: no event
    clock.advance(2.0)
    st.set_blanked(True)
    assert heard == [(False, 3.0), (True, 5.0)]


def test_time_going_backwards_is_refused() -> None:
    st, clock = make()
    clock.advance(10.0)
    st.set_blanked(False)
    with pytest.raises(ValueError, match="before the last"):
        st.set_blanked(True, t_s=5.0)


# -- slit and magnification map rows to specimen position (§0) ----------------------------------


def test_330_ypix_over_1880_nm_is_5_70_nm_per_pixel() -> None:
    """§0 [Y14]: 1880 nm over 330 y pixels = 5.70 nm/pixel with the default magnification."""
    st, _ = make()
    assert st.ypix_pitch_m() == pytest.approx(1880e-9 / 330, rel=1e-12)
    assert st.ypix_pitch_m() * 1e9 == pytest.approx(5.70, abs=0.005)
    assert st.effective_magnification == pytest.approx(2048 * 14e-6 / 1880e-9, rel=1e-12)


def test_row_pitch_at_specimen_is_pitch_over_magnification() -> None:
    st, _ = make()
    st.set_magnification(st.magnification / 2)
    s, x, y = st.row_positions_m()
    assert np.diff(s) == pytest.approx(np.full(2047, 14e-6 / st.magnification), rel=1e-9)
    assert s.mean() == pytest.approx(0.0, abs=1e-18)
    # halved magnification: the 1880 nm slit image now covers only the middle half of the rows
    mask = st.row_illumination_mask()
    assert mask.sum() * st.row_pitch_at_specimen_m() == pytest.approx(1880e-9, rel=1e-9)
    assert mask[:500].sum() == 0 and mask[-500:].sum() == 0 and np.allclose(mask[520:1528], 1.0, rtol=1e-9)


def test_slit_centre_and_angle_move_the_strip_on_the_specimen() -> None:
    st, _ = make()
    st.set_slit_centre(100e-9, -50e-9)
    st.set_slit_angle(math.pi / 2)
    s, x, y = st.row_positions_m()
    assert y == pytest.approx(np.full_like(y, -50e-9), abs=1e-15)  # strip now runs along -x
    assert x == pytest.approx(100e-9 - s, abs=1e-15)


def test_rows_outside_the_slit_get_no_electrons() -> None:
    st, _ = make(slit_height_m=940e-9)  # magnification still derived from the 940 nm slit
    st.set_magnification(st.magnification / 2)  # slit image now spans half the rows
    e = st.electrons_per_row_per_s()
    lit = np.flatnonzero(e > 0)
    assert lit.size == pytest.approx(1024, abs=2)
    assert e[: lit[0]].sum() == 0 and e[lit[-1] + 1 :].sum() == 0
    # total over the rows = D x height x width (what the slit passes)
    assert e.sum() == pytest.approx(st.dose_rate_e_per_m2_s * 940e-9 * 200e-9, rel=1e-9)


def test_electrons_per_5_7_nm_pixel_in_30_s_at_10_e_per_A2_s_is_3_4e7() -> None:
    """§5: D * 57 Å * w[Å] * t = 3.4e7 electrons per y pixel for w = 200 nm, 30 s, 10 e/Å²/s."""
    st, clock = make()
    st.set_beam_current(10 * PER_A2 * E * st.illuminated_area_m2)
    st.set_blanked(False)
    clock.advance(30.0)
    st.set_blanked(True)
    clock.advance(100.0)  # blanked time adds nothing
    per_row = st.electrons_per_row(0.0, 130.0)
    per_ypix = per_row[1000] * st.params.rows_per_ypix
    assert per_ypix == pytest.approx(10 * 57 * 2000 * 30, rel=0.003)  # 3.42e7 (57 Å ≈ 5.70 nm)
    assert per_row.sum() == pytest.approx(10 * PER_A2 * 30 * 1880e-9 * 200e-9, rel=1e-9)


def test_rows_outside_the_illuminated_disc_are_dark() -> None:
    st, _ = make(illuminated_diameter_m=1e-6)  # disc smaller than the 1880 nm slit
    s, _, _ = st.row_positions_m()
    e = st.electrons_per_row_per_s()
    assert np.all(e[np.abs(s) > 0.5e-6] == 0)
    assert np.all(e[np.abs(s) < 0.49e-6] > 0)


# -- the simulated microscope is a view of the state -------------------------------------------


def test_sim_microscope_reads_back_from_state_and_records_clock_time() -> None:
    st, clock = make()
    mic = SimMicroscope(st)
    assert isinstance(mic, Microscope)
    clock.advance(7.0)
    mic.beam.set_blanked(False)
    clock.advance(3.0)
    mic.safe_state()
    assert mic.beam.blanked and st.blank_intervals() == [(7.0, 10.0)]
    assert mic.beam.dose_rate_e_per_m2_s == pytest.approx(st.dose_rate_e_per_m2_s)
    mic.slit.set_width(300e-9)
    mic.slit.set_centre(1e-9, 2e-9)
    mic.lens.set_defocus(-1e-6)
    assert (st.slit_width_m, st.slit_centre_m, mic.lens.defocus_m) == (300e-9, (1e-9, 2e-9), -1e-6)
    assert mic.beam.high_tension_V == 300e3 and mic.lens.mode == "TEM"


def test_sim_microscope_out_of_range_is_an_instrument_error_and_changes_nothing() -> None:
    st, _ = make()
    mic = SimMicroscope(st)
    with pytest.raises(InstrumentError) as info:
        mic.slit.set_width(-1.0)
    assert info.value.code == -222 and st.slit_width_m == 200e-9
