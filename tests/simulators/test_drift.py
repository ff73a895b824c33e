"""Specimen drift under the slit (simulators/drift.py): thermal settling, random walk, jumps,
a path that does not depend on how it is queried, and images that move and smear with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.acquisition.runner import camera_settings
from insitem.drivers.clock import VirtualClock
from insitem.protocols.loader import load
from insitem.simulators.eels import EELSParameters, EELSSynthesizer
from insitem.simulators.drift import NM, DriftParameters, SpecimenDrift
from insitem.simulators.world import SimWorld, WorldParameters, smear_rows


def test_no_drift_by_default() -> None:
    d = SpecimenDrift(DriftParameters(), seed=1)
    assert np.all(d.displacement_m(np.array([0.0, 10.0, 1e5])) == 0.0)


def test_thermal_drift_settles_to_its_residual_velocity() -> None:
    v0, vinf, tau = 3e-11, 1e-11, 600.0
    d = SpecimenDrift(DriftParameters(settling_velocity_m_per_s=(v0, 0.0), residual_velocity_m_per_s=(vinf, 0.0),
                                      settling_time_s=tau), seed=0)
    t = np.array([0.0, tau, 10 * tau])
    y = d.displacement_m(t)[:, 0]
    expected = vinf * t + v0 * tau * (1 - np.exp(-t / tau))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-20)
    # velocity: v0 + vinf at the start, vinf long after
    h = 1e-3
    assert (d.displacement_m(h)[0] - d.displacement_m(0.0)[0]) / h == pytest.approx(v0 + vinf, rel=1e-3)
    late = (d.displacement_m(20 * tau + h)[0] - d.displacement_m(20 * tau)[0]) / h
    assert late == pytest.approx(vinf, rel=1e-3)


def test_a_disturbance_restarts_the_thermal_drift_only_after_it() -> None:
    p = DriftParameters(settling_velocity_m_per_s=(1e-11, 0.0), settling_time_s=100.0)
    d = SpecimenDrift(p, seed=0)
    before = d.displacement_m(np.array([50.0, 500.0]))[:, 0]
    d.disturb(400.0)
    after = d.displacement_m(np.array([50.0, 500.0]))[:, 0]
    assert after[0] == before[0]
    assert after[1] - before[1] == pytest.approx(1e-11 * 100.0 * (1 - math.exp(-1.0)), rel=1e-12)


def test_random_walk_variance_grows_as_D_t_and_the_path_ignores_the_query_order() -> None:
    D, T = (0.5 * NM) ** 2, 400.0
    finals = []
    for seed in range(400):
        d = SpecimenDrift(DriftParameters(random_walk_m2_per_s=D), seed=seed)
        finals.append(d.displacement_m(T))
    var = np.var(np.array(finals), axis=0)
    # 400 samples: the sample variance is within ~4 x sqrt(2/400) = 28 % of D T (deterministic seeds)
    np.testing.assert_allclose(var, D * T, rtol=0.3)
    a = SpecimenDrift(DriftParameters(random_walk_m2_per_s=D), seed=7)
    b = SpecimenDrift(DriftParameters(random_walk_m2_per_s=D), seed=7)
    late_first = a.displacement_m(np.array([9000.0, 12.5]))
    early_first = np.array([b.displacement_m(12.5), b.displacement_m(9000.0)])[::-1]
    np.testing.assert_array_equal(late_first, early_first)


def test_jumps_come_at_their_rate() -> None:
    p = DriftParameters(jump_rate_per_s=1 / 100.0, jump_rms_m=5 * NM)
    d = SpecimenDrift(p, seed=3)
    t = np.arange(0.0, 1e5, 1.0)
    steps = np.abs(np.diff(d.displacement_m(t)[:, 0]))
    n_jumps = int((steps > 0).sum())
    assert n_jumps == pytest.approx(1000, abs=4 * math.sqrt(1000))  # Poisson: mean 1000, sd 32


def test_smear_is_the_mean_of_shifted_images() -> None:
    img = np.zeros((20, 3))
    img[10] = 1.0
    out = smear_rows(img, np.array([-1.0, 0.0, 1.0, 0.5]))
    assert out[:, 0].sum() == pytest.approx(1.0)
    assert out[9, 0] == pytest.approx(0.25) and out[10, 0] == pytest.approx(0.25 + 0.125)
    assert out[11, 0] == pytest.approx(0.25 + 0.125)
    assert smear_rows(img, np.array([0.001])) is img  # below 1 % of a row: untouched


@pytest.fixture()
def drifting_world() -> tuple[SimWorld, float]:
    protocol = load("ex-situ-lasgtp")
    pitch = WorldParameters().ypix_m
    v = pitch / 100.0  # one y pixel per 100 s, no settling, no noise
    # no re-alignment error and no knock-on loss: the two images differ by the drift alone
    params = WorldParameters(seed=protocol.sample.seed, alignment_error_eV=0.0, li_critical_dose_e_per_m2=1e40,
                             drift=DriftParameters(residual_velocity_m_per_s=(v, 0.0)))
    world = SimWorld.from_protocol(protocol, VirtualClock(), params)
    world.eels = EELSSynthesizer(EELSParameters(drift_eV_per_s=0.0, drift_random_walk_eV_per_sqrt_s=0.0))
    world.optics.set_blanked(False, 0.0)
    return world, v


def test_the_image_moves_with_the_specimen(drifting_world: tuple[SimWorld, float]) -> None:
    world, v = drifting_world
    protocol = load("ex-situ-lasgtp")
    name = protocol.spectrometer.windows[0].name
    s = camera_settings(protocol, name).model_copy(update={"exposure_s": 1e-3})
    shape = tuple(world.detector.params.shape_px)
    rows = world.binned_row_positions_m(s, shape[0])
    li = world.li_ratio(rows)
    first = world.expected_rows(s, shape, 0.0, 1e-3, li).rows
    later = world.expected_rows(s, shape, 200.0, 200.0 + 1e-3, li).rows  # 2 pixels of drift
    assert world.specimen_drift_m(200.0)[0] == pytest.approx(2 * WorldParameters().ypix_m, rel=1e-9)
    sign = 1 if rows[1] > rows[0] else -1
    n = first.shape[0] - 1  # the last (partial-bin) row gets no electrons
    shifted = first[: n - 2] if sign > 0 else first[2:n]
    moved = later[2:n] if sign > 0 else later[: n - 2]
    assert float(first.max()) > 0
    # each row's spectrum beyond the zero loss, by shape (the illumination per row does not move
    # with the specimen; the zero-loss region carries the spectrometer's own row-dependent effects)
    energy = s.energy_offset_eV + s.dispersion_eV_per_px * (np.arange(first.shape[1]) + 0.5)
    loss = energy > 10.0
    norm = lambda a: a[:, loss] / a[:, loss].sum(axis=1, keepdims=True)  # noqa: E731
    inner = slice(8, -8)  # the chromatic blur along the slit is cut at the image's ends
    np.testing.assert_allclose(norm(moved)[inner], norm(shifted)[inner], rtol=5e-3, atol=1e-4 * float(norm(shifted).max()))
    assert not np.allclose(later[:n], first[:n], rtol=2e-3)


def test_a_stage_move_takes_back_the_drift_as_an_image_shift_does(drifting_world: tuple[SimWorld, float]) -> None:
    """After 200 s (2 pixels of drift), a stage move of -2 pixels along y puts the image where it was
    at t = 0, exactly as the same image shift does; the ground truth's displacement says so too."""
    world, _ = drifting_world
    protocol = load("ex-situ-lasgtp")
    s = camera_settings(protocol, protocol.spectrometer.windows[0].name).model_copy(update={"exposure_s": 1e-3})
    shape = tuple(world.detector.params.shape_px)
    rows = world.binned_row_positions_m(s, shape[0])
    li = world.li_ratio(rows)
    first = world.expected_rows(s, shape, 0.0, 1e-3, li).rows
    d = 2 * WorldParameters().ypix_m
    world.position.move_stage(y_m=world.position.stage["y_m"] - d)
    assert world.image_displacement_m(200.0)[0] == pytest.approx(0.0, abs=1e-15)
    by_stage = world.expected_rows(s, shape, 200.0, 200.0 + 1e-3, li).rows
    world.position.move_stage(y_m=world.position.stage["y_m"] + d)
    world.position.set_image_shift(0.0, -d)
    by_shift = world.expected_rows(s, shape, 200.0, 200.0 + 1e-3, li).rows
    np.testing.assert_array_equal(by_stage, by_shift)
    n = first.shape[0] - 1  # the last (partial-bin) row gets no electrons
    np.testing.assert_allclose(by_stage[:n], first[:n], rtol=1e-5, atol=1e-6 * float(first.max()))  # float32 rows


def test_a_long_exposure_smears_the_interface(drifting_world: tuple[SimWorld, float]) -> None:
    world, v = drifting_world
    protocol = load("ex-situ-lasgtp")
    name = protocol.spectrometer.windows[0].name
    s = camera_settings(protocol, name)
    shape = tuple(world.detector.params.shape_px)
    rows = world.binned_row_positions_m(s, shape[0])
    li = world.li_ratio(rows)
    short = world.expected_rows(s.model_copy(update={"exposure_s": 1e-3}), shape, 0.0, 1e-3, li).rows
    long_ = world.expected_rows(s.model_copy(update={"exposure_s": 400.0}), shape, 0.0, 400.0, li).rows
    prof_short = short[:-1].sum(axis=1) / short[:-1].sum()
    prof_long = long_[:-1].sum(axis=1) / long_[:-1].sum()
    # smeared over 4 pixels: the steepest row-to-row change is smaller
    assert np.abs(np.diff(prof_long)).max() < 0.7 * np.abs(np.diff(prof_short)).max()


def test_a_bias_step_restarts_the_thermal_drift_and_cv_stairs_do_not() -> None:
    """`SimWorld` calls `SpecimenDrift.disturb` when the bias jumps by `BIAS_STEP_V` or more: switching
    the output on at a level away from the open-circuit voltage, or jumping to a hold; the 1 mV
    stairs of a sweep never count (simulators/world.py `_bias_step`)."""
    from insitem.simulators.world import BIAS_STEP_V

    protocol = load("ex-situ-lasgtp")
    clock = VirtualClock()
    params = WorldParameters(seed=protocol.sample.seed, drift=DriftParameters(settling_velocity_m_per_s=(1 * NM, 0.0),
                                                                           settling_time_s=600.0))
    world = SimWorld.from_protocol(protocol, clock, params)
    ocv = float(world.cell.V_term_V)
    clock.sleep_until(100.0)
    world.run_staircase(ocv + 1e-3 * np.arange(1, 51), 1.0)  # a sweep of 1 mV stairs from the OCV on
    assert world.drift._disturbances == [0.0]
    clock.sleep_until(200.0)
    world.applied_V = world.applied_V + 0.5 * BIAS_STEP_V  # below the threshold
    assert world.drift._disturbances == [0.0]
    clock.sleep_until(300.0)
    world.applied_V = world.applied_V + 2.0 * BIAS_STEP_V  # a jump to a hold
    assert world.drift._disturbances == [0.0, 300.0]
    # after it the drift runs at the full settling velocity again (1 nm/s at first)
    d = world.drift.displacement_m(np.array([300.0, 301.0]))[:, 0]
    assert d[1] - d[0] == pytest.approx(1 * NM * (1 + math.exp(-300.0 / 600.0)), rel=0.01)
    world.applied_V = None  # output off: not a step
    clock.sleep_until(400.0)
    world.applied_V = ocv + 2.0 * BIAS_STEP_V  # output on away from the open-circuit voltage
    assert world.drift._disturbances[-1] == 400.0
