"""Unequal binning (docs/decisions/0005-gif-unequal-binning.md): the socket carries one binning, so
a (b_rows, b_cols) window is acquired at g = gcd(b_rows, b_cols) and the rest is summed in the driver.

Exact wire: the bytes of every request the driver writes for a 6 x 1 window, with the socket
replaced by a scripted channel (pytest-mock); then the same window through the emulator."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import CommunicationError
from insitem.drivers.gif import GifCamera, GifCameraConfig
from insitem.drivers.gif import protocol as P
from insitem.drivers.gif.channel import BinaryChannel
from insitem.drivers.interfaces import CameraSettings
from insitem.simulators.emulators.gif import GifEmulator

if TYPE_CHECKING:
    from conftest import PatternCamera

pytestmark = pytest.mark.wire

SR_EELS = CameraSettings(exposure_s=0.5, binning=(6, 1), readout_area=(36, 0, 60, 8), energy_offset_eV=35.0,
                         processing="gain_normalized")


class ScriptedChannel:
    """A `BinaryChannel` double: records every write, serves queued reply bytes to reads."""

    def __init__(self, mocker: Any) -> None:
        self.mock = mocker.create_autospec(BinaryChannel, instance=True)
        self.mock.resource = "gif://dm-pc:48890"
        self.mock.is_open = True
        self.written: list[bytes] = []
        self.inbox = bytearray()
        self.mock.write.side_effect = self.written.append
        self.mock.read_exact.side_effect = self._read_exact
        self.mock.read_into.side_effect = self._read_into

    def queue(self, data: bytes) -> None:
        self.inbox += data

    def _read_exact(self, n: int) -> bytes:
        assert len(self.inbox) >= n, f"read of {n} bytes with {len(self.inbox)} queued"
        out = bytes(self.inbox[:n])
        del self.inbox[:n]
        return out

    def _read_into(self, view: memoryview) -> None:
        view[:] = self._read_exact(len(view))


def ok(code: int, longs: tuple[int, ...] = ()) -> bytes:
    return P.pack_reply(code, 0, longs)


def test_six_by_one_exact_bytes_and_row_sums(mocker: Any) -> None:
    ch = ScriptedChannel(mocker)
    cam = GifCamera(GifCameraConfig(resource=ch.mock.resource, sensor_shape=(64, 8), set_energy_on_configure=False),
                    clock=VirtualClock(), channel=ch.mock)
    cam.configure(SR_EELS)
    assert ch.written == []  # geometry is local; nothing sent before the exposure
    wire = np.arange(24 * 8, dtype=np.uint16).reshape(24, 8) * 7
    wire[7, 3] = 65535  # one saturated CCD pixel in binned row 1
    ch.queue(ok(P.Fn.SetReadMode) + ok(P.Fn.SelectCamera))
    ch.queue(ok(P.Fn.GetAcquiredImage, (24 * 8, 8, 24, 1)) + wire.astype("<u2").tobytes())
    cam.start_exposure()
    frame = cam.read_frame()
    # SetReadMode(-1, 1.0), SelectCamera(0) (gs §3.4 bytes), then GetAcquiredImage at binning 1:
    # 76 bytes; arrSize 192, width 8, height 24 (6 x 4 rows), processing 2, binning 1,
    # area rows 36..60 (binned = unbinned at binning 1), columns 0..8, shutter -1, no delay,
    # no division, corrections -1; exposure 0.5 s, settling 0.
    assert ch.written == [
        bytes.fromhex("14000000" "0a000000" "ffffffff" "000000000000f03f"),
        bytes.fromhex("0c000000" "09000000" "00000000"),
        struct.pack("<15i2d", 76, 6, 192, 8, 24, 2, 1, 36, 0, 60, 8, -1, 0, 0, -1, 0.5, 0.0),
    ]
    assert frame.data.shape == SR_EELS.frame_shape(cam.sensor_shape) == (4, 8)
    assert frame.data.dtype == np.float32
    np.testing.assert_array_equal(frame.data, wire.astype(np.int64).reshape(4, 6, 8).sum(axis=1))
    assert frame.data[1, 3] > 65535  # sums are not clipped to 16 bits
    assert frame.saturated_px == 1
    assert frame.metadata["software_binning"] == "6x1" and frame.metadata["wire_binning"] == 1.0


def test_largest_equal_binning_goes_on_chip(mocker: Any) -> None:
    """(4, 2): binning 2 on the chip, 2 x 1 blocks summed in the driver; area in binning-2 pixels."""
    ch = ScriptedChannel(mocker)
    cam = GifCamera(GifCameraConfig(resource=ch.mock.resource, sensor_shape=(64, 16), set_energy_on_configure=False),
                    clock=VirtualClock(), channel=ch.mock)
    cam.configure(CameraSettings(exposure_s=1.0, binning=(4, 2), readout_area=(8, 4, 24, 16), processing="unprocessed"))
    wire = np.full((8, 6), 1000, dtype=np.uint16)
    ch.queue(ok(P.Fn.SetReadMode) + ok(P.Fn.SelectCamera) + ok(P.Fn.GetAcquiredImage, (48, 6, 8, 1)) + wire.tobytes())
    cam.start_exposure()
    frame = cam.read_frame()
    assert ch.written[-1] == struct.pack("<15i2d", 76, 6, 48, 6, 8, 0, 2, 4, 2, 12, 8, -1, 0, 0, -1, 1.0, 0.0)
    np.testing.assert_array_equal(frame.data, np.full((4, 6), 2000.0))


def test_short_image_for_a_summed_window_is_an_error(mocker: Any) -> None:
    """DM cut the height (arrSize rule, gs §5.1): the blocks cannot be summed, nothing is guessed."""
    ch = ScriptedChannel(mocker)
    cam = GifCamera(GifCameraConfig(resource=ch.mock.resource, sensor_shape=(64, 8), set_energy_on_configure=False),
                    clock=VirtualClock(), channel=ch.mock)
    cam.configure(SR_EELS)
    ch.queue(ok(P.Fn.SetReadMode) + ok(P.Fn.SelectCamera) + ok(P.Fn.GetAcquiredImage, (20 * 8, 8, 20, 1))
             + bytes(20 * 8 * 2))
    cam.start_exposure()
    with pytest.raises(CommunicationError, match="cannot sum 6x1"):
        cam.read_frame()


def test_six_by_one_through_the_emulator(camera: GifCamera, emulator: GifEmulator, backend: PatternCamera) -> None:
    """End to end over loopback: DM (the emulator) is asked for binning 1 and six times the rows;
    the backend sees an equal-binning acquisition; the driver's frame is the row sums."""
    settings = CameraSettings(exposure_s=0.2, binning=(6, 1), readout_area=(34, 0, 214, 512), energy_offset_eV=55.0,
                              processing="unprocessed")
    camera.configure(settings)
    camera.start_exposure()
    frame = camera.read_frame()
    assert frame.data.shape == (30, 512)
    assert emulator.requests[-1].longs[:9] == (180 * 512, 512, 180, 0, 1, 34, 0, 214, 512)
    wire = backend.frames[-1]
    assert wire.settings.binning == (1, 1) and wire.settings.readout_area == (34, 0, 214, 512)
    assert emulator.acquisitions[-1] == wire.settings
    np.testing.assert_array_equal(frame.data, wire.data.astype(np.int64).reshape(30, 6, 512).sum(axis=1))
    assert frame.settings == settings


def test_dark_reference_is_summed_like_the_frames(camera: GifCamera, backend: PatternCamera) -> None:
    camera.configure(CameraSettings(exposure_s=0.1, binning=(6, 1), readout_area=(0, 0, 60, 64)))
    dark = camera.dark_reference(0.1, n_frames=2)
    assert dark.shape == (10, 64) and dark.dtype == np.float32
    expected = backend.frames[-1].data.astype(np.float64).reshape(10, 6, 64).sum(axis=1)
    np.testing.assert_allclose(dark, expected)  # the pattern repeats: the mean of two equal frames
