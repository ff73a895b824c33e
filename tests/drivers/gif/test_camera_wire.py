"""GifCamera against the emulated SerialEMCCD server on loopback (design §9 tier 3), and the same
suite against a real camera when `--resource camera=TCPIP0::host::48890::SOCKET` is given."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, InstrumentError
from insitem.drivers.gif import GifCamera, GifCameraConfig
from insitem.drivers.gif import protocol as P
from insitem.drivers.gif.protocol import Fn
from insitem.drivers.interfaces import CameraSettings, Frame
from insitem.simulators.emulators.gif import GifEmulator

if TYPE_CHECKING:
    from conftest import PatternCamera  # the test double of tests/drivers/gif/conftest.py

pytestmark = pytest.mark.wire


def _config(emu: GifEmulator, backend: PatternCamera, **kw: object) -> GifCameraConfig:
    base: dict[str, object] = dict(resource=emu.resource, sensor_shape=backend.sensor_shape, timeout_s=2.0,
                                   readout_timeout_s=2.0)
    base.update(kw)
    return GifCameraConfig(**base)  # type: ignore[arg-type]


def expose(cam: GifCamera) -> Frame:
    cam.start_exposure()
    return cam.read_frame()


# -- the shared suite (emulator and hardware) ---------------------------------------------------


def camera_suite(cam: GifCamera, energy_eV: float) -> Frame:
    """What must hold on any SerialEMCCD camera: identity, a frame of the configured shape, the
    energy loss set by script and read back."""
    ident = cam.identify()
    assert ident.vendor == "Gatan" and ("GMS" in ident.firmware or "DM" in ident.firmware)
    settings = CameraSettings(exposure_s=0.01, readout_area=(0, 0, 128, 256), energy_offset_eV=energy_eV,
                              processing="unprocessed")
    cam.configure(settings)
    assert abs(cam.energy_loss_eV() - energy_eV) <= cam.config.energy_tolerance_eV
    frame = expose(cam)
    assert frame.data.shape == settings.frame_shape(cam.sensor_shape) == (128, 256)
    assert frame.data.dtype == np.uint16
    assert frame.settings == settings
    return frame


def test_suite_against_emulator(camera: GifCamera, emulator: GifEmulator, backend: PatternCamera) -> None:
    frame = camera_suite(camera, energy_eV=455.0)
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)
    assert emulator.gif.energy_loss_eV == 455.0
    assert backend.frames[-1].settings.energy_offset_eV == 455.0  # the backend saw the drift tube


@pytest.mark.hardware("camera")
def test_suite_against_hardware(hardware_resources: dict[str, str]) -> None:
    cam = GifCamera(GifCameraConfig(resource=hardware_resources["camera"], timeout_s=10.0))
    try:
        before = cam.energy_loss_eV()
        try:
            camera_suite(cam, energy_eV=before + 1.0)
        finally:
            cam.set_energy_loss(before)
    finally:
        cam.close()


def test_identify_old_plugin_without_get_plugin_version(backend: PatternCamera) -> None:
    with GifEmulator(backend, missing_codes=frozenset({Fn.GetPluginVersion})) as emu:
        cam = GifCamera(_config(emu, backend))
        assert cam.identify().firmware == "GMS 3.32, SerialEMCCD plugin < 2015"
        assert cam.reconnects == 0  # a −1 reply keeps the connection in step (pitfall 6)
        cam.close()


# -- acquisition ---------------------------------------------------------------------------------


def test_full_frame_chunked_pixels_equal_backend(camera: GifCamera, emulator: GifEmulator,
                                                 backend: PatternCamera) -> None:
    settings = CameraSettings(exposure_s=0.5, energy_offset_eV=50.0)
    camera.configure(settings)
    t0 = camera.clock.now()
    frame = expose(camera)
    assert frame.data.shape == backend.sensor_shape  # 256 x 512 uint16 = 262144 B = 4 chunks of 64 KiB
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)
    assert frame.saturated_px == 1 and frame.t_start_s == t0
    # wire order before every shot: SetReadMode(-1, 1.0), SelectCamera(0), GetAcquiredImage (gs §8.1)
    codes = [r.code for r in emulator.requests[-3:]]
    assert codes == [Fn.SetReadMode, Fn.SelectCamera, Fn.GetAcquiredImage]
    assert emulator.requests[-3].longs == (-1,) and emulator.requests[-3].doubles == (1.0,)
    req = emulator.requests[-1]
    assert req.longs == (256 * 512, 512, 256, 2, 1, 0, 0, 256, 512, -1, 0, 0, -1)
    assert req.doubles == (0.5, 0.0)
    assert emulator.errors == []  # three handshakes accepted


def test_uneven_chunks(backend: PatternCamera) -> None:
    # 262144 B over 100000-byte superchunks: 3 chunks of 87382, 87382, 87380 bytes (gs §5.2)
    assert P.chunk_sizes(262_144, P.chunk_count(262_144, 100_000)) == [87_382, 87_382, 87_380]
    with GifEmulator(backend, superchunk_bytes=100_000) as emu:
        cam = GifCamera(_config(emu, backend))
        cam.configure(CameraSettings(exposure_s=0.1))
        frame = expose(cam)
        np.testing.assert_array_equal(frame.data, backend.frames[-1].data)
        cam.close()


def test_binning_sends_binned_read_area(camera: GifCamera, emulator: GifEmulator, backend: PatternCamera) -> None:
    settings = CameraSettings(exposure_s=0.1, binning=(2, 2), readout_area=(64, 128, 192, 512))
    camera.configure(settings)
    frame = expose(camera)
    assert frame.data.shape == (64, 192)
    # gs pitfall 10: binned coordinates, bottom/right exclusive; width/height binned
    assert emulator.requests[-1].longs[:9] == (64 * 192, 192, 64, 2, 2, 32, 64, 96, 256)
    assert backend.frames[-1].settings.readout_area == (64, 128, 192, 512)
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)


@pytest.mark.parametrize(
    ("binning", "area"), [((6, 4), (1, 0, 97, 100)), ((2, 2), (1, 0, 101, 100))],
)
def test_geometry_the_socket_cannot_carry_is_refused(camera: GifCamera, emulator: GifEmulator,
                                                     binning: tuple[int, int], area: object) -> None:
    n = len(emulator.requests)
    with pytest.raises(ValueError):
        camera.configure(CameraSettings(exposure_s=0.1, binning=binning, readout_area=area))  # type: ignore[arg-type]
    assert len(emulator.requests) == n and camera.settings is None


def test_start_returns_while_dm_acquires(emulator: GifEmulator, backend: PatternCamera, camera: GifCamera) -> None:
    release = threading.Event()
    entered = threading.Event()
    original = backend.read_frame

    def slow_read() -> Frame:
        entered.set()
        assert release.wait(5)
        return original()

    backend.read_frame = slow_read  # type: ignore[method-assign]
    camera.configure(CameraSettings(exposure_s=0.2))
    camera.start_exposure()  # returns although the server is still inside the acquisition
    assert entered.wait(5) and not release.is_set()
    with pytest.raises(RuntimeError, match="in flight"):
        camera.identify()  # no pipelining (pitfall 9)
    release.set()
    frame = camera.read_frame()
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)


def test_abort_drops_the_reply_and_the_next_call_is_clean(camera: GifCamera, emulator: GifEmulator,
                                                          backend: PatternCamera) -> None:
    camera.configure(CameraSettings(exposure_s=0.1))
    camera.start_exposure()
    camera.abort()
    assert camera.identify().firmware.startswith("GMS 3.32")  # not fed the aborted image's bytes
    frame = expose(camera)
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)
    assert camera.reconnects == 1


def test_dark_and_gain_references(camera: GifCamera, emulator: GifEmulator, backend: PatternCamera) -> None:
    camera.configure(CameraSettings(exposure_s=0.1, readout_area=(0, 0, 64, 128)))
    dark = camera.dark_reference(0.25, n_frames=3)
    # default: unprocessed exposures with the beam blanked by the caller -> mean of the raw frames
    assert dark.dtype == np.float32 and dark.shape == (64, 128)
    expected = np.mean([f.data.astype(np.float64) for f in backend.frames[-3:]], axis=0)
    np.testing.assert_allclose(dark, expected, rtol=0, atol=1e-3)
    assert all(f.settings.processing == "unprocessed" for f in backend.frames[-3:])
    gain = camera.gain_reference()  # float32, 4 B/pixel, 512 KiB -> 8 chunks of 64 KiB
    np.testing.assert_array_equal(gain, backend.gain_reference())


def test_dark_reference_call(emulator: GifEmulator, backend: PatternCamera) -> None:
    cam = GifCamera(_config(emulator, backend, dark_method="dark_reference_call"))
    cam.configure(CameraSettings(exposure_s=0.1, readout_area=(0, 0, 64, 128)))
    dark = cam.dark_reference(1.0, n_frames=2)
    # PatternCamera's dark level is 100 + 10·t for the padded exposure t = 1.0 + 0.0005 s (gs §4.1 D0)
    np.testing.assert_array_equal(dark, np.full((64, 128), 110.0, dtype=np.float32))
    assert emulator.requests[-1].code == Fn.GetDarkReference
    cam.close()


def test_visa_socket_resource(emulator: GifEmulator, backend: PatternCamera) -> None:
    cam = GifCamera(_config(emulator, backend, resource=emulator.visa_resource))
    try:
        frame = camera_suite(cam, energy_eV=99.5)
        np.testing.assert_array_equal(frame.data, backend.frames[-1].data)
        cam.configure(CameraSettings(exposure_s=0.1))
        frame = expose(cam)  # 4 chunks with handshakes through pyvisa
        np.testing.assert_array_equal(frame.data, backend.frames[-1].data)
    finally:
        cam.close()


# -- spectrometer by DM script ---------------------------------------------------------------------


def test_energy_loss_if_family_with_ht_offset(camera: GifCamera, emulator: GifEmulator) -> None:
    emulator.gif.ht_offset_eV = 3.0  # Leginon's case: loss != drift tube until the HT offset is zeroed
    camera.set_energy_loss(532.0)
    assert camera.gif_family == "IF"
    assert emulator.gif.energy_loss_eV == 532.0 and emulator.gif.ht_offset_eV == 0.0
    scripts = [P.unpack_script(r.array) for r in emulator.requests if r.code == Fn.ExecuteScript]
    assert "IFSetEnergyOffset(3, 532.000000); Exit(1.0)" in scripts  # bare setter + Exit (pitfall 20)
    assert "IFSetEnergyOffset(2, 0); Exit(1.0)" in scripts


def test_energy_loss_ifc_family(emulator: GifEmulator, backend: PatternCamera) -> None:
    with GifEmulator(backend, families=frozenset({"IFC"})) as emu:
        emu.gif.offset_on = False
        cam = GifCamera(_config(emu, backend))
        cam.set_energy_loss(-12.5)
        assert cam.gif_family == "IFC" and cam.energy_loss_eV() == -12.5
        assert emu.gif.offset_on and emu.gif.drift_tube_eV == -12.5
        cam.close()


def test_energy_loss_without_gif_functions(backend: PatternCamera) -> None:
    with GifEmulator(backend, families=frozenset()) as emu:
        cam = GifCamera(_config(emu, backend))
        with pytest.raises(InstrumentError, match="no GIF"):
            cam.configure(CameraSettings(exposure_s=0.1))
        cam.close()


def test_script_failure_is_an_error(camera: GifCamera, emulator: GifEmulator) -> None:
    with pytest.raises(InstrumentError) as err:
        camera.execute_script("Exit({value})")  # instamatic's unformatted script (pitfall 19)
    assert err.value.code == 1
    with pytest.raises(InstrumentError):
        camera.execute_script("Exit(-999)")  # the sentinel (pitfall 12)
    assert camera.execute_script("number x = 6 * 7; Exit(x)") == 42.0
    camera.set_energy_loss(10.0)
    emulator.faults.fail_next(Fn.ExecuteScript, 1)  # the getter "throws" during the read-back
    with pytest.raises(InstrumentError):
        camera.set_energy_loss(20.0)


def test_filter_slit_set_read_and_not_resent(camera: GifCamera, emulator: GifEmulator) -> None:
    camera.set_filter_slit(True, 20.0)
    assert emulator.gif.slit_in and emulator.gif.slit_width_eV == 20.0
    assert camera.filter_slit() == (True, 20.0)
    n = len(emulator.requests)
    camera.set_filter_slit(True, 20.0)  # unchanged: only the two reads before and after
    setters = [P.unpack_script(r.array) for r in emulator.requests[n:] if r.code == Fn.ExecuteScript]
    assert not any("Set" in s for s in setters)
    camera.set_filter_slit(False)
    assert not emulator.gif.slit_in


# -- faults and reconnects ---------------------------------------------------------------------------


def test_timeout_reconnects_and_never_takes_a_stale_reply(emulator: GifEmulator, backend: PatternCamera) -> None:
    cam = GifCamera(_config(emulator, backend, timeout_s=0.3))
    assert cam.call(Fn.GetPluginVersion).longs == (120,)
    emulator.faults.latency_s = 1.0  # the DMVersion reply (12 bytes, like the next one) comes late
    with pytest.raises(DeviceTimeoutError):
        cam.call(Fn.GetDMVersion)
    emulator.faults.latency_s = 0.0
    cam.config = cam.config.model_copy(update={"timeout_s": 3.0})
    assert cam.call(Fn.GetPluginVersion).longs == (120,)  # 50302 here would be the stale reply
    assert cam.reconnects == 1
    cam.close()


def test_no_answer_then_recovery(camera: GifCamera, emulator: GifEmulator) -> None:
    camera.config = camera.config.model_copy(update={"timeout_s": 0.2})
    emulator.faults.no_answer = 1
    with pytest.raises(DeviceTimeoutError):
        camera.call(Fn.GetNumberOfCameras)
    camera.config = camera.config.model_copy(update={"timeout_s": 3.0})
    assert camera.call(Fn.GetNumberOfCameras).longs == (1,)
    assert camera.reconnects == 1


def test_garbled_header_then_recovery(camera: GifCamera, emulator: GifEmulator) -> None:
    emulator.faults.garble_header = 1
    with pytest.raises(CommunicationError, match="garbled"):
        camera.call(Fn.GetDMVersion)
    assert camera.call(Fn.GetDMVersion).longs == (50302,)
    assert camera.reconnects == 1


def test_dropped_connection_is_resent_once_on_a_fresh_socket(camera: GifCamera, emulator: GifEmulator) -> None:
    emulator.faults.drop_connection = 1  # server closes before any reply byte (like a takeover)
    assert camera.call(Fn.GetDMVersion).longs == (50302,)
    assert camera.reconnects == 1
    assert [r.code for r in emulator.requests[-2:]] == [Fn.GetDMVersion, Fn.GetDMVersion]


def test_dropped_connection_without_resend_policy(emulator: GifEmulator, backend: PatternCamera) -> None:
    cam = GifCamera(_config(emulator, backend, resend_on_send_failure=False))
    emulator.faults.drop_connection = 1
    with pytest.raises(CommunicationError):
        cam.call(Fn.GetDMVersion)
    assert cam.call(Fn.GetDMVersion).longs == (50302,)
    cam.close()


def test_truncated_image_then_clean_frame(camera: GifCamera, emulator: GifEmulator, backend: PatternCamera) -> None:
    camera.configure(CameraSettings(exposure_s=0.1))
    emulator.faults.truncate_image = 1
    camera.start_exposure()
    with pytest.raises(CommunicationError):
        camera.read_frame()
    frame = expose(camera)
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)


@pytest.mark.parametrize("rc", [53, 26, 2])
def test_positive_code_on_image_call(camera: GifCamera, emulator: GifEmulator, backend: PatternCamera,
                                     rc: int) -> None:
    camera.configure(CameraSettings(exposure_s=0.1))
    emulator.faults.fail_next(Fn.GetAcquiredImage, rc)
    camera.start_exposure()
    with pytest.raises(InstrumentError) as err:
        camera.read_frame()
    assert err.value.code == rc
    assert camera.reconnects == 0  # a positive code leaves the stream in step (no data follow)
    frame = expose(camera)
    np.testing.assert_array_equal(frame.data, backend.frames[-1].data)


def test_dm_refuses_out_of_range_area(emulator: GifEmulator, backend: PatternCamera) -> None:
    # the driver believes in a bigger chip than the backend has: DM's script throws -> 26, no data
    cam = GifCamera(_config(emulator, backend, sensor_shape=(1024, 1024)))
    cam.configure(CameraSettings(exposure_s=0.1, readout_area=(0, 0, 512, 1024)))
    cam.start_exposure()
    with pytest.raises(InstrumentError) as err:
        cam.read_frame()
    assert err.value.code == 26
    assert cam.call(Fn.GetDMVersion).longs == (50302,)
    cam.close()


def test_new_client_replaces_old(emulator: GifEmulator, backend: PatternCamera) -> None:
    a = GifCamera(_config(emulator, backend))
    b = GifCamera(_config(emulator, backend))
    assert a.call(Fn.GetDMVersion).longs == (50302,)
    assert b.call(Fn.GetPluginVersion).longs == (120,)  # kicks a out (gs §1)
    assert a.call(Fn.GetNumberOfCameras).longs == (1,)  # a notices the close, reconnects, resends
    assert a.reconnects == 1 and emulator.connections == 3
    a.close()
    b.close()


def test_unreachable_server_is_a_communication_error(backend: PatternCamera) -> None:
    with GifEmulator(backend) as emu:
        resource = emu.resource
    cam = GifCamera(GifCameraConfig(resource=resource, connect_timeout_s=0.5), clock=VirtualClock())
    with pytest.raises(CommunicationError):
        cam.identify()
