"""The specimen across the slit (simulators/specimen_shape.py, SimWorld.expected_rows): a drift across
the slit changes what the strip integrates - a wedge changes the thickness the low-loss measures, a
tilted interface moves along the slit by -dx tan(alpha) and is smeared by w tan(alpha), an edge
brings vacuum into the strip - and with no drift across the slit nothing changes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.acquisition.windows import camera_settings
from insitem.analysis.drift import row_profile, step_position
from insitem.drivers.clock import VirtualClock
from insitem.protocols.loader import load
from insitem.simulators.drift import NM, DriftParameters
from insitem.simulators.eels import EELSParameters, EELSSynthesizer
from insitem.simulators.sample import SampleParameters
from insitem.simulators.specimen_shape import AcrossSlit, strip_view
from insitem.simulators.world import SimWorld, WorldParameters, box_smear_rows, smear_rows

PROTOCOL = "in-situ-lasgtp"
VX = 1.0 * NM  # across-slit drift, m/s: 100 nm at t = 100 s


def _world(shape: AcrossSlit | None, vx: float = VX, vy: float = 0.0) -> SimWorld:
    protocol = load(PROTOCOL)
    params = WorldParameters(seed=3, alignment_error_eV=0.0, li_critical_dose_e_per_m2=1e40,
                             drift=DriftParameters(residual_velocity_m_per_s=(vy, vx)))
    world = SimWorld.from_protocol(protocol, VirtualClock(), params)
    if shape is not None:
        world.sample = type(world.sample)(world.sample.params.model_copy(update={"across_slit": shape}))
    world.eels = EELSSynthesizer(EELSParameters(drift_eV_per_s=0.0, drift_random_walk_eV_per_sqrt_s=0.0))
    world.optics.set_blanked(False, 0.0)
    return world


def _image(world: SimWorld, window: str, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(binned expected image without the partial last row, its row positions, energy axis)."""
    protocol = load(PROTOCOL)
    s = camera_settings(protocol, window).model_copy(update={"exposure_s": 1e-3})
    shape = tuple(world.detector.params.shape_px)
    rows = world.binned_row_positions_m(s, shape[0])
    r = world.expected_rows(s, shape, t_s, t_s + s.exposure_s, world.li_ratio(rows))
    top, left, _, right = s.area(shape)
    energy = s.energy_offset_eV + s.dispersion_eV_per_px * (np.arange(left, right) + 0.5)
    n = rows.size
    return (r.rows[:n] * r.repeats[:n, None]).astype(float), rows, energy


def _t_over_lambda(image: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Log-ratio t/lambda per row: ln(all counts / zero-loss counts within +-3 eV)."""
    zlp = np.abs(energy) <= 3.0
    return np.log(image.sum(axis=1) / image[:, zlp].sum(axis=1))


def test_strip_view_geometry() -> None:
    shape = AcrossSlit(interface_tilt_rad=math.radians(5), thickness_gradient=0.05, edge_x_m=150e-9)
    v = strip_view(shape, -100e-9, 200e-9, 100e-9)
    assert v.shift_m == pytest.approx(-100e-9 * math.tan(math.radians(5)))
    assert v.smear_m == pytest.approx(200e-9 * math.tan(math.radians(5)))
    assert v.thickness_factor == pytest.approx(1 - 0.05 * 100e-9 / 100e-9, abs=shape.thickness_step / 2)
    assert v.vacuum_fraction == 0.0
    assert strip_view(shape, 100e-9, 200e-9, 100e-9).vacuum_fraction == pytest.approx(0.25)  # strip 0..200 nm, edge 150
    assert strip_view(shape.model_copy(update={"edge_x_m": -150e-9}), -100e-9, 200e-9, 100e-9).vacuum_fraction == pytest.approx(0.25)
    assert strip_view(AcrossSlit(), 5e-6, 200e-9, 100e-9).is_plain


def test_no_drift_across_the_slit_changes_nothing() -> None:
    """The shipped LASGTP specimen (a wedge and an edge across the slit) drifting only along the slit
    gives bit for bit the images of a uniform infinite slab."""
    plain = _world(AcrossSlit(), vx=0.0, vy=0.05 * NM)
    shaped = _world(SampleParameters.lasgtp_cell().across_slit, vx=0.0, vy=0.05 * NM)
    assert shaped.sample.params.across_slit.thickness_gradient != 0.0
    for window in ("low-loss", "li-k"):
        a, _, _ = _image(plain, window, 100.0)
        b, _, _ = _image(shaped, window, 100.0)
        assert np.array_equal(a, b), window


def test_a_wedge_changes_the_thickness_the_low_loss_measures_as_the_strip_moves_across_it() -> None:
    g = 0.15  # 15 nm of thickness per 100 nm of x (exaggerated, to measure it)
    world = _world(AcrossSlit(thickness_gradient=g))
    before, rows, energy = _image(world, "low-loss", 0.0)
    after, _, _ = _image(world, "low-loss", 100.0)  # the specimen moved +100 nm across: the strip sees x = -100 nm
    view = world.strip_view(world.specimen_drift_m(100.0 + 5e-4)[1])
    assert view.thickness_factor == pytest.approx(1.0 - g * 100e-9 / 100e-9, abs=0.002)
    electrolyte = (rows > 100e-9) & (rows < 1.2e-6)  # away from Pt and from the image's end
    ratio = _t_over_lambda(after, energy)[electrolyte] / _t_over_lambda(before, energy)[electrolyte]
    # the window holds losses up to 92 eV only (the plasmon tail beyond is cut alike): the ratio of the
    # log-ratio thicknesses follows the thickness within 1 %
    np.testing.assert_allclose(ratio, view.thickness_factor, rtol=0.01)
    assert np.max(ratio) < 0.9


def test_an_edge_brings_vacuum_into_the_strip() -> None:
    edge = -140e-9  # the specimen ends 40 nm beyond the strip (-100..100 nm at first), on the side it drifts away from
    world = _world(AcrossSlit(edge_x_m=edge))
    before, rows, energy = _image(world, "low-loss", 0.0)
    assert world.strip_view(world.specimen_drift_m(5e-4)[1]).vacuum_fraction == 0.0
    after, _, _ = _image(world, "low-loss", 100.0)  # strip at specimen x = -200..0 nm, edge at -140 nm
    f = world.strip_view(world.specimen_drift_m(100.0 + 5e-4)[1]).vacuum_fraction
    assert f == pytest.approx((edge - (-100e-9 - 100e-9)) / 200e-9, rel=1e-3)
    vacuum_world = _world(AcrossSlit(edge_x_m=-1e-12))  # at t = 200 s (x -300..-100 nm) all beyond this edge
    vacuum, _, _ = _image(vacuum_world, "low-loss", 200.0)
    assert vacuum_world.strip_view(vacuum_world.specimen_drift_m(200.0)[1]).vacuum_fraction == 1.0
    assert np.all(np.abs(energy[np.argmax(vacuum[100])]) < 1.0)  # vacuum: the zero-loss peak alone
    # the images are float32: equal within its precision
    np.testing.assert_allclose(after, (1 - f) * before + f * vacuum, rtol=1e-6, atol=1e-6 * float(before.max()))
    # the log-ratio thickness drops as the zero-loss of the vacuum part predicts
    zlp = np.abs(energy) <= 3.0
    i_tot, i_0, n = before.sum(axis=1), before[:, zlp].sum(axis=1), vacuum.sum(axis=1)
    predicted = np.log(((1 - f) * i_tot + f * n) / ((1 - f) * i_0 + f * vacuum[:, zlp].sum(axis=1)))
    np.testing.assert_allclose(_t_over_lambda(after, energy), predicted, rtol=1e-5)
    assert np.median(_t_over_lambda(after, energy)) < 0.8 * np.median(_t_over_lambda(before, energy))


def test_a_tilted_interface_moves_along_the_slit_with_the_drift_across_it_and_is_smeared_by_the_strip() -> None:
    """Interface at 10 deg to the slit's normal, the specimen drifting 100 nm across the slit: the Pt
    step moves along the slit by -dx tan(alpha) = -17.6 nm (3.1 pixels) and is smeared by a box
    w tan(alpha) = 35 nm wide (rms 10.2 nm) in every image."""
    alpha = math.radians(10.0)
    straight = _world(AcrossSlit())
    tilted = _world(AcrossSlit(interface_tilt_rad=alpha))
    found = {}
    for name, world in (("straight", straight), ("tilted", tilted)):
        for t in (0.0, 100.0):
            image, rows, energy = _image(world, "low-loss", t)
            found[name, t] = step_position(row_profile(image, slice(None)), rows, near_m=0.0)
    dx = straight.specimen_drift_m(100.0 + 5e-4)[1] - straight.specimen_drift_m(5e-4)[1]
    assert dx == pytest.approx(100e-9, rel=1e-3)
    moved = found["tilted", 100.0].position_m - found["tilted", 0.0].position_m
    assert moved == pytest.approx(-dx * math.tan(alpha), abs=0.5e-9)
    assert found["straight", 100.0].position_m == pytest.approx(found["straight", 0.0].position_m, abs=1e-12)
    # the smear adds the box's variance (w tan alpha)^2 / 12 to the step's width
    s0, s1 = found["straight", 0.0].width_m, found["tilted", 0.0].width_m
    box_rms = 200e-9 * math.tan(alpha) / math.sqrt(12)
    assert s1 == pytest.approx(math.hypot(s0, box_rms), rel=0.25)
    assert s1 > 1.3 * s0


def test_box_smear_is_the_mean_of_shifted_images() -> None:
    img = np.zeros((30, 2))
    img[15] = 1.0
    out = box_smear_rows(img, 4.0)
    assert out[:, 0].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(out, smear_rows(img, 4.0 * ((np.arange(32) + 0.5) / 32 - 0.5)), atol=1e-15)
    assert box_smear_rows(img, 0.001) is img
