"""A camera test double whose frames are a ramp, so every byte that crosses a wire can be checked."""

from __future__ import annotations

import numpy as np

from insitem.drivers.interfaces import Camera, CameraSettings, Frame, InstrumentIdentity


class RampCamera(Camera):
    """Test double: pixel = row * `row_step` + column of the binned frame, uint16 (64 x 128 sensor)."""

    sensor_shape = (64, 128)

    def __init__(self, row_step: int = 1000) -> None:
        super().__init__()
        self.row_step = row_step

    def identify(self) -> InstrumentIdentity:
        return InstrumentIdentity("test", "RampCamera")

    def _configure(self, settings: CameraSettings) -> None:
        pass

    def _start_exposure(self) -> float:
        return 0.0

    def read_frame(self) -> Frame:
        assert self.settings is not None
        rows, cols = self.settings.frame_shape(self.sensor_shape)
        data = (np.arange(rows)[:, None] * self.row_step + np.arange(cols)[None, :]).astype(np.uint16)
        return Frame(data, 0.0, self.settings)

    def dark_reference(self, exposure_s: float, n_frames: int = 10) -> np.ndarray:
        return np.zeros(self.sensor_shape, np.uint16)

    def gain_reference(self) -> np.ndarray:
        return np.ones(self.sensor_shape, np.float32)
