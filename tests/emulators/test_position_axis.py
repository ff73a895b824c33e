"""The position (along-slit) axis of a hardware run against the simulated rig's (decision 0006).

The hardware path knows only what the instruments report: the TEM's magnification (`LENS:MAG?`)
and the camera's pixel pitch. Behind the emulators stands a simulated world built from the same
protocol, so the hardware path's axis must equal the simulated rig's, which the world computes
from its own geometry (decision 0004: 0.95 nm per CCD row, positions from the slit's first edge).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from insitem.acquisition.rig import HardwareRigBundle, SimRigBundle, build_hardware_rig
from insitem.acquisition.runner import camera_settings
from insitem.drivers.clock import RealClock, VirtualClock
from insitem.drivers.interfaces import CameraSettings
from insitem.protocols.loader import load
from insitem.simulators.serve import start_servers

pytestmark = pytest.mark.wire

PROTOCOL = "in-situ-lasgtp"


@pytest.fixture(scope="module")
def bundles() -> Iterator[tuple[HardwareRigBundle, SimRigBundle]]:
    protocol = load(PROTOCOL)
    with start_servers(protocol, [protocol.instruments.potentiostat.model, "gif", "tem"]) as servers:
        hw = build_hardware_rig(protocol, RealClock(), dict(servers.resources))
        assert isinstance(hw, HardwareRigBundle)
        sim = SimRigBundle.create(protocol, VirtualClock())
        try:
            yield hw, sim
        finally:
            hw.close()


def _axis(bundle: HardwareRigBundle | SimRigBundle, settings: CameraSettings) -> np.ndarray:
    scale, offset = bundle.position_axis_nm(settings)
    rows, _ = settings.frame_shape(bundle.rig.camera.sensor_shape)
    return offset + scale * np.arange(rows)


def test_shipped_windows_match_the_simulated_rig(bundles: tuple[HardwareRigBundle, SimRigBundle]) -> None:
    hw, sim = bundles
    protocol = hw.protocol
    for w in protocol.spectrometer.windows:
        settings = camera_settings(protocol, w.name)
        (hs, ho), (ss, so) = hw.position_axis_nm(settings), sim.position_axis_nm(settings)
        assert hs == pytest.approx(ss, rel=0.01)
        assert ss == pytest.approx(5.70, rel=1e-6)  # 6 rows x 0.95 nm (decision 0004)
        a_hw, a_sim = _axis(hw, settings), _axis(sim, settings)
        # every position pixel within 1 % of a pixel of the simulated rig's
        np.testing.assert_allclose(a_hw, a_sim, rtol=0, atol=0.01 * ss)


@pytest.mark.parametrize(
    ("binning", "area"), [((1, 1), (0, 0, 2048, 2048)), ((4, 4), (400, 0, 720, 512)), ((6, 1), (34, 0, 2014, 2048))],
)
def test_other_geometries_match(bundles: tuple[HardwareRigBundle, SimRigBundle], binning: tuple[int, int],
                                area: tuple[int, int, int, int]) -> None:
    hw, sim = bundles
    settings = CameraSettings(exposure_s=1.0, binning=binning, readout_area=area)
    np.testing.assert_allclose(_axis(hw, settings), _axis(sim, settings), rtol=0,
                               atol=0.01 * sim.position_axis_nm(settings)[0])


def test_axis_follows_the_reported_magnification(bundles: tuple[HardwareRigBundle, SimRigBundle]) -> None:
    """Doubling the TEM's magnification halves the length per row; the slit centre stays on the
    detector's middle row."""
    hw, _ = bundles
    settings = CameraSettings(exposure_s=1.0, binning=(6, 1), readout_area=(34, 0, 2014, 2048))
    scale, offset = hw.position_axis_nm(settings)
    lens = hw.rig.microscope.lens
    m0 = lens.magnification
    lens.set_magnification(2 * m0)
    try:
        scale2, offset2 = hw.position_axis_nm(settings)
    finally:
        lens.set_magnification(m0)
    assert scale2 == pytest.approx(scale / 2, rel=1e-9)
    half_slit = hw.protocol.spectrometer.slit.length * 1e9 / 2
    assert offset2 - half_slit == pytest.approx((offset - half_slit) / 2, rel=1e-9)
