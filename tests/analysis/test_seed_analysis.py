"""The seed-run analyses on synthetic arrays whose answers are known (analysis/particles.py,
analysis/valence.py, analysis/voltammetry.py)."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis.axes import EnergyAxis, PositionAxis
from insitem.analysis.particles import analyse_particles
from insitem.analysis.valence import analyse_valence, electrode_rows
from insitem.analysis.voltammetry import beam_steps, redox_peaks, sweeps

E = EnergyAxis(offset_eV=5.0, scale_eV=0.1, size=2048)
POS = PositionAxis(offset_m=0.0, scale_m=5.7e-9, size=330)


def drude(e: np.ndarray, ep: float, width: float) -> np.ndarray:
    return e * width * ep**2 / ((e**2 - ep**2) ** 2 + (e * width) ** 2)


def image(blocks: list[tuple[int, int, float, float]], rng: np.random.Generator) -> np.ndarray:
    """Rows [a, b) hold a plasmon at ep (height h); the rest is vacuum; Poisson noise + read noise."""
    e = E.values_eV
    img = np.zeros((POS.size, E.size))
    for a, b, ep, h in blocks:
        img[a:b] = h * drude(e, ep, 4.0) / drude(np.array([ep]), ep, 4.0) + 0.02 * h * (e / 20.0) ** -3
    return rng.poisson(img) + rng.normal(0, 5, img.shape)


def test_particle_width_and_plasmon_are_read_from_the_rows() -> None:
    rng = np.random.default_rng(1)
    e = E.values_eV

    def maximum(ep: float) -> float:  # where the noiseless row peaks (a Drude loss peaks just below Ep)
        row = drude(e, ep, 4.0) + 0.02 * drude(np.array([ep]), ep, 4.0) * (e / 20.0) ** -3
        sel = (e > 8) & (e < 30)
        return float(e[sel][np.argmax(row[sel])])

    img = image([(0, 70, 22.6, 400.0), (70, 123, 16.7, 300.0)], rng)
    f = analyse_particles(img, E, POS)
    assert f.width_m == pytest.approx(53 * 5.7e-9)
    assert f.host_start_m == pytest.approx(70 * 5.7e-9)
    assert f.host_plasmon_eV == pytest.approx(maximum(16.7), abs=0.1)
    img = image([(0, 70, 22.6, 400.0), (70, 150, 12.2, 300.0)], rng)
    f = analyse_particles(img, E, POS)
    assert f.width_m == pytest.approx(80 * 5.7e-9)
    assert f.host_plasmon_eV == pytest.approx(maximum(12.2), abs=0.1)


def test_a_dim_tail_beside_the_particle_is_not_particle() -> None:
    rng = np.random.default_rng(2)
    img = image([(0, 70, 22.6, 4000.0), (70, 120, 16.7, 300.0), (120, 140, 16.7, 15.0)], rng)
    assert analyse_particles(img, E, POS).width_m == pytest.approx(50 * 5.7e-9)


def test_resistor_line_has_no_peaks_and_a_wave_has_one_per_sweep() -> None:
    up = np.arange(0, 5.0001, 0.005)
    v = np.concatenate([up, up[::-1][1:]])
    assert [s[2] for s in sweeps(v)] == [1, -1]
    rng = np.random.default_rng(3)
    line = (v - 1.7).clip(0) / 1e10 + rng.normal(0, 1e-10, v.size)
    assert redox_peaks(v, line) == []
    wave = np.where(np.arange(v.size) < up.size, 1e-9, -1e-9) * np.exp(-((v - 2.2) / 0.15) ** 2)
    peaks = redox_peaks(v, wave + rng.normal(0, 1e-10, v.size))
    assert [(round(p.potential_V, 1), p.direction) for p in peaks] == [(2.2, 1), (2.2, -1)]


def _cv_0_5_0() -> np.ndarray:
    up = np.arange(0, 5.0001, 0.005)
    return np.concatenate([up, up[::-1][1:]])


def test_a_capacity_edge_on_an_ohmic_line_is_not_a_peak_but_the_same_edge_after_a_foot_is() -> None:
    """The lamella's cycles 2-3 (docs/decisions/0029): the current follows one resistor line from the
    start of the charge sweep (negative below the cell voltage: the cell still discharging) and drops
    to the leakage when the electrode runs full at 3.9 V. Its maximum rises above nothing it did
    before: no peak. The same ramp and drop after a flat foot (the reaction setting in at 1.7 V) is a
    wave (an iR-limited thin-layer peak), found with its baseline-corrected height."""
    v = _cv_0_5_0()
    rising = np.arange(v.size) <= np.argmax(v)
    rng = np.random.default_rng(6)
    noise = rng.normal(0, 20e-12, v.size)
    ramp = (v - 1.7) / 1e10
    line_then_edge = np.where(rising, np.where(v < 3.9, ramp, 0.0), np.minimum(ramp, 0.0))
    assert redox_peaks(v, line_then_edge + noise) == []
    foot_then_edge = np.where(rising & (v < 3.9), np.maximum(ramp, 0.0), 0.0)
    (p,) = redox_peaks(v, foot_then_edge + noise)
    assert p.direction == 1 and 3.5 < p.potential_V < 3.9
    # the baseline is the foot's zero current: the peak current is the ramp's height at the maximum
    assert p.excess_A == pytest.approx((p.potential_V - 1.7) / 1e10, rel=0.15)


def test_a_thin_layer_wave_on_a_sloping_background_is_measured_from_its_baseline() -> None:
    """A Nernstian thin-layer wave (i_p sech^2 shape, FWHM 90.6 mV, physics.md §3.3) at 1.6 V on a
    charging current plus a resistor's slope: found on both sweeps, with the peak current above
    the extrapolated background (not above zero) to within 5 %."""
    v = _cv_0_5_0()
    rising = np.arange(v.size) <= np.argmax(v)
    direction = np.where(rising, 1.0, -1.0)
    ip = 2e-9
    fwhm = 0.0906
    wave = ip / np.cosh(1.7627 * (v - 1.6) / fwhm) ** 2  # sech^2: FWHM = 2 acosh(sqrt 2) = 1.7627 x 2 / 2
    background = 0.3e-9 * direction + v / 5e9
    rng = np.random.default_rng(7)
    i = direction * wave + background + rng.normal(0, 20e-12, v.size)
    peaks = redox_peaks(v, i, smooth_V=0.02)  # smoothing well below the FWHM keeps the height
    assert [(round(p.potential_V, 2), p.direction) for p in peaks] == [(1.6, 1), (1.6, -1)]
    for p in peaks:
        assert abs(p.excess_A) == pytest.approx(ip, rel=0.05)


def test_beam_steps_recover_a_known_step_on_a_sloping_current() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(0, 300, 0.5)
    v = 0.01 * t
    i = 1e-11 * t + rng.normal(0, 2e-11, t.size)
    starts = np.array([50.0, 120.0, 190.0])
    for s in starts:
        i[(t > s) & (t <= s + 5)] += 6e-11
    steps = beam_steps(t, i, v, starts, np.full(3, 5.0))
    assert len(steps) == 3
    for st in steps:
        assert abs(st.step_A - 6e-11) < 4 * st.sigma_A
        assert st.sigma_A < 2e-11


def test_five_ev_peak_and_li_k_of_the_electrode_rows() -> None:
    e = EnergyAxis(offset_eV=2.0, scale_eV=0.1, size=1024)
    x = e.values_eV
    base = drude(x, 25.5, 10.0) * 1e4 + 1e3 * (x / 10) ** -3
    fe = np.where(x > 52.7, 30.0, 0.0)

    def li(n: float) -> np.ndarray:
        return np.where(x > 55, n * 40.0 * (x / 55) ** -4, 0.0)

    peak = 2e3 * x * 2 * 25 / ((x**2 - 25) ** 2 + (2 * x) ** 2)
    img = np.tile(base, (40, 1))
    img[20:] += fe + li(1.0)
    img[:20] += li(1.5)  # electrolyte: Li, no Fe
    rows = electrode_rows(img, e)
    assert rows.tolist() == [False] * 20 + [True] * 20
    before = analyse_valence(img, e, rows)
    img[20:] -= li(0.5)  # half the Li gone
    after = analyse_valence(img, e, rows)
    img[20:] += peak  # and FePO4's 5 eV peak in
    assert analyse_valence(img, e, rows).peak5_ratio > before.peak5_ratio + 0.01
    assert after.peak5_ratio == pytest.approx(before.peak5_ratio, abs=1e-3)
    # the edge signal holds the Fe M2,3 (52.7 eV) under the Li-K ([S:MOR09]) and a background error common
    # to both exposures: the ratio falls by exactly the Li that left
    pl = float(img[rows][:, e.window(15.0, 40.0)].sum())
    li_gone = 20 * float(li(0.5)[e.window(56.0, 70.0)].sum())
    assert (before.li_k_ratio - after.li_k_ratio) * pl == pytest.approx(li_gone, rel=0.02)


def test_beam_on_readings_can_be_left_out_of_the_peak_search() -> None:
    up = np.arange(0, 5.0001, 0.005)
    v = np.concatenate([up, up[::-1][1:]])
    rng = np.random.default_rng(5)
    i = (v - 1.7).clip(0) / 1e10 + rng.normal(0, 5e-12, v.size)
    on = np.zeros(v.size, bool)
    for k in range(100, v.size - 100, 140):  # 5 s exposures every 70 s at 0.5 s per reading
        on[k:k + 10] = True
    i_beam = i + np.where(on, 1e-9, 0.0)
    assert redox_peaks(v, i_beam) != []  # each exposure's step looks like a peak
    assert redox_peaks(v, i_beam, exclude=on) == []


def test_the_lasgtp_bulk_cv_keeps_its_peaks_near_1v6_on_every_sweep() -> None:
    """The analysis is not blind: the LASGTP cell's CV as the ex-situ protocol cycles it ([Y14]: 0.5-2.5 V
    at 40 mV/min, 1 mV stairs; simulators/electrochemistry.py) has its charge and discharge peaks
    around U_pos - E0_neg = 1.58 V on every sweep of three cycles, also with 100 nA of reading noise."""
    from insitem.simulators.electrochemistry import Cell, CellParameters

    cell = Cell(CellParameters.lasgtp_bulk())
    up = np.linspace(0.5, 2.5, 2001)
    t = np.arange(up.size) * 1.5
    v, i = [], []
    for _ in range(3):
        for sweep in (up, up[::-1]):
            v.append(sweep[1:])
            i.append(cell.advance_sweep(t, sweep, 1e-3)["current_A"])
    volts, amps = np.concatenate(v), np.concatenate(i)
    amps = amps + np.random.default_rng(8).normal(0, 1e-7, amps.size)
    peaks = redox_peaks(volts, amps)
    assert [p.sweep for p in peaks] == list(range(6))
    assert all(1.55 < p.potential_V < 1.75 for p in peaks if p.direction > 0)
    assert all(1.45 < p.potential_V < 1.6 for p in peaks if p.direction < 0)
    assert all(abs(p.excess_A) > 0.5 * abs(p.current_A) for p in peaks)
