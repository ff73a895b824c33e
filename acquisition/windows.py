"""A protocol's spectrometer window as the camera settings that expose it."""

from __future__ import annotations

from insitem.drivers.interfaces import CameraSettings
from insitem.protocols.schema import Protocol


def camera_settings(protocol: Protocol, window_name: str) -> CameraSettings:
    """The camera settings of one spectrometer window of a protocol."""
    spec = protocol.spectrometer
    w = spec.window(window_name)
    r0, r1 = w.readout_rows or (0, spec.camera.sensor_rows)
    return CameraSettings(
        exposure_s=w.exposure / w.frames,
        binning=w.binning,
        readout_area=(r0, 0, r1, w.channels),
        energy_offset_eV=w.energy_offset,
        dispersion_eV_per_px=w.dispersion,
        processing=spec.camera.processing,
    )
