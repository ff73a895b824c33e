"""Knock-on Li loss under the beam (physics.md §5): c -> c exp(-dose/D_c), only while unblanked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.protocols.loader import load
from insitem.simulators.world import SimWorld

E_PER_A2 = 1e20  # e/m^2 per e/A^2


@pytest.fixture()
def world() -> SimWorld:
    return SimWorld.from_protocol(load("ex-situ-lasgtp"), VirtualClock())


def test_li_halves_after_ln2_critical_doses_of_beam_and_not_while_blanked(world: SimWorld) -> None:
    dc = world.params.li_critical_dose_e_per_m2
    assert dc == pytest.approx(1e4 * E_PER_A2)  # §5 default [est]
    rate = world.optics.dose_rate_e_per_m2_s
    t_half = math.log(2) * dc / rate
    world.optics.set_blanked(False, 0.0)
    world.optics.set_blanked(True, t_half)
    world.clock.advance(10 * t_half)  # blanked: no further loss
    assert world.li_retained(world.clock.now(), world.clock.now()) == pytest.approx(0.5, rel=1e-9)
    _, scalars = world.ground_truth(np.array([0.0, 1e-6]))
    assert scalars["li_retained_fraction"] == pytest.approx(0.5, rel=1e-9)


def test_exposure_sees_the_mean_of_the_loss_over_its_dose(world: SimWorld) -> None:
    dc = world.params.li_critical_dose_e_per_m2
    rate = world.optics.dose_rate_e_per_m2_s
    t1 = 2.0 * dc / rate  # the exposure takes the dose from 0 to 2 D_c
    world.optics.set_blanked(False, 0.0)
    world.clock.advance(t1)
    t = np.linspace(0.0, t1, 100001)
    numeric = np.trapezoid(np.exp(-rate * t / dc), t) / t1
    assert world.li_retained(0.0, t1) == pytest.approx(numeric, rel=1e-6)
    assert world.li_retained(0.0, t1) == pytest.approx((1 - math.exp(-2.0)) / 2.0, rel=1e-12)


def test_lost_li_leaves_the_spectra_but_not_the_host_structure() -> None:
    from insitem.simulators.sample import Sample

    s = Sample()
    y, c = np.array([50e-9, 1e-6]), np.array([8.5, 1.0])
    whole, damaged = s.column_state(y, c), s.column_state(y, c, li_retained=0.5)
    np.testing.assert_allclose(damaged.areal_density_per_m2["Li"], 0.5 * whole.areal_density_per_m2["Li"])
    np.testing.assert_array_equal(damaged.areal_density_per_m2["Ti"], whole.areal_density_per_m2["Ti"])
    np.testing.assert_array_equal(damaged.f_ti3, whole.f_ti3)  # Ti valence and O-O follow the electrochemistry
    np.testing.assert_array_equal(damaged.R_nm, whole.R_nm)
