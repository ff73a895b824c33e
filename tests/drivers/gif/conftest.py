"""Fixtures for the GIF driver tests: a deterministic camera test double behind the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.gif import GifCamera, GifCameraConfig
from insitem.drivers.interfaces import Camera, CameraSettings, Frame, InstrumentIdentity
from insitem.simulators.emulators.gif import GifEmulator


class PatternCamera(Camera):
    """Deterministic backend: pixel (r, c) of the binned frame is a hash of its position, the
    energy offset and the exposure, with pixel (0, 0) at full scale (one saturated pixel).

    Records every frame it hands out, so tests compare the driver's pixels with the backend's.
    """

    def __init__(self, sensor_shape: tuple[int, int] = (256, 512)) -> None:
        super().__init__()
        self.sensor_shape = sensor_shape
        self.frames: list[Frame] = []
        self.starts = 0

    def identify(self) -> InstrumentIdentity:
        return InstrumentIdentity("test", "PatternCamera")

    def _configure(self, settings: CameraSettings) -> None:
        pass

    def _start_exposure(self) -> float:
        self.starts += 1
        return 0.0

    def pattern(self, settings: CameraSettings) -> np.ndarray:
        rows, cols = settings.frame_shape(self.sensor_shape)
        top, left, _, _ = settings.area(self.sensor_shape)
        r = np.arange(rows, dtype=np.int64)[:, None] + top
        c = np.arange(cols, dtype=np.int64)[None, :] + left
        seed = int(round(settings.energy_offset_eV * 10)) * 31 + int(round(settings.exposure_s * 1e4))
        data = ((r * 2654435761 + c * 40503 + seed) % 65535).astype(np.uint16)
        data[0, 0] = 65535
        return data

    def read_frame(self) -> Frame:
        assert self.settings is not None
        frame = Frame(self.pattern(self.settings), 0.0, self.settings)
        self.frames.append(frame)
        return frame

    def dark_reference(self, exposure_s: float, n_frames: int = 10) -> np.ndarray:
        assert self.settings is not None
        rows, cols = self.settings.frame_shape(self.sensor_shape)
        return np.full((rows, cols), 100.0 + 10 * exposure_s, dtype=np.float32)

    def gain_reference(self) -> np.ndarray:
        rows, cols = self.sensor_shape
        return (1.0 + 0.01 * np.sin(np.arange(rows * cols, dtype=np.float32))).reshape(rows, cols).astype(np.float32)


@pytest.fixture
def backend() -> PatternCamera:
    return PatternCamera()


@pytest.fixture
def emulator(backend: PatternCamera) -> Iterator[GifEmulator]:
    # 64 KiB superchunks: a 256 x 512 uint16 frame (256 KiB) crosses in 4 chunks, 3 handshakes
    with GifEmulator(backend, superchunk_bytes=65_536) as emu:
        yield emu


@pytest.fixture
def camera(emulator: GifEmulator, backend: PatternCamera) -> Iterator[GifCamera]:
    cam = GifCamera(
        GifCameraConfig(resource=emulator.resource, sensor_shape=backend.sensor_shape, timeout_s=2.0,
                        readout_timeout_s=2.0),
        clock=VirtualClock(),
    )
    yield cam
    cam.close()
