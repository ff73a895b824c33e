"""Gatan GIF camera + spectrometer through the SerialEMCCD socket plugin (design §5).

Wire reference: /work/shared/reference/gatan-socket.md ("gs §n"). The codec is in
`insitem.drivers.gif.protocol`, the byte channels in `insitem.drivers.gif.channel`.

Exposure design (start returns at once, read blocks)
----------------------------------------------------
The plugin serves one request at a time and DM runs the acquisition to completion before it
replies (gs §1). `start_exposure()` therefore sends SetReadMode/SelectCamera (tiny round trips,
pitfall 16: plugin state persists across clients) and then *sends* the GetAcquiredImage request
without waiting; the exposure starts in DM while the caller goes on (e.g. stepping the
potentiostat). `read_frame()` waits for the reply header and the chunked pixels. No worker thread
is needed: the socket's receive buffer holds the reply until it is read. While an acquisition is
in flight every other camera call raises (no pipelining, pitfall 9); `abort()` drops the
connection so the late reply goes to the closed socket (pitfall 5; DM still finishes the shot)
and the next call reconnects.

Timeouts and reconnects (gs §1 "Recommended client behaviour", pitfalls 4, 5)
---------------------------------------------------------------------------
Status calls use `timeout_s`; image calls use exposure + `readout_timeout_s`. On any client-side
timeout, garbled header or dropped connection the socket is closed and the next call opens a
fresh one, so a late reply can never be taken as the answer to the next request. A send that
fails on a connection the server dropped is retried once on a fresh socket (as SerialEM and
instamatic do); a request whose reply timed out is never resent automatically.

Spectrometer control is DM script through ExecuteScript (gs §6). Every script ends with `Exit`,
its return code and the −999 sentinel are checked (pitfalls 11, 12, 19), setters that return
nothing are sent bare followed by `Exit(1.0)` and verified with the matching getter (pitfall 20).

Unequal binning (docs/decisions/0005-gif-unequal-binning.md)
-----------------------------------------------------------
GetAcquiredImage carries one binning for rows and columns (gs §4.1 L5): the plugin builds its
acquisition script as `CM_CreateAcquisitionParameters_FullCCD(camera, proc, exposure, b, b)`, and a
queued script runs before that line, so no script can change it. A window binned
(b_rows, b_cols) is therefore acquired at the largest equal binning g = gcd(b_rows, b_cols) over
the same read area, and the remaining (b_rows/g) x (b_cols/g) blocks are summed here: a 6 x 1
SR-EELS window crosses the wire at binning 1 with six times the rows. Same electrons (dose and
signal are unchanged); the costs are physics and time: every extra CCD row read adds its read
noise (variance x b_rows/g per binned pixel instead of once for on-chip binning), the readout
and the transfer carry b_rows/g times the pixels, unprocessed frames carry the bias b_rows/g
times, and each wire pixel is clipped to 0..65535 before the sum (a saturated wire pixel marks
its binned pixel saturated). Software-binned frames are float32 (sums exceed 16 bits).

Simplifications (named):
* The dispersion is not set through the socket (no script call for it in gs §6); the configured
  `dispersion_eV_per_px` is recorded in the frame settings only.
* K2/K3 read modes, dose fractionation, frame saving and DigiScan calls are not used.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.drivers.clock import Clock, RealClock
from insitem.drivers.emulated import DM_TIME_SCALE_FUNCTION, check_time_scale
from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, InstrumentError
from insitem.drivers.gif import protocol as P
from insitem.drivers.gif.channel import BinaryChannel, ConnectionClosedError, open_channel
from insitem.drivers.interfaces import Camera, CameraSettings, Frame, InstrumentIdentity

PROCESSING_CODES: dict[str, int] = {"unprocessed": 0, "dark_subtracted": 1, "gain_normalized": 2}  # gs §4.1 L4


class GifCameraConfig(BaseModel):
    """Connection and acquisition policy for `GifCamera`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str = Field(description="gif://host:port or TCPIP0::host::48890::SOCKET")
    camera_index: int = Field(default=0, ge=0, description="position in DM's camera list (SelectCamera)")
    sensor_shape: tuple[int, int] = Field(default=(2048, 2048), description="(rows, columns) unbinned pixels")
    timeout_s: float = Field(default=10.0, gt=0, description="reply timeout for status and script calls, s")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout, s")
    readout_timeout_s: float = Field(
        default=20.0, gt=0, description="added to the exposure for image-call timeouts (readout + DM overhead), s"
    )
    resend_on_send_failure: bool = Field(default=True, description="retry a failed send once on a fresh socket")
    read_mode: int = Field(default=-1, description="SetReadMode mode; -1 = ordinary CCD/CMOS (gs §4.1 code 10)")
    corrections: int = Field(default=-1, description="GetAcquiredImage L13; -1 leaves DM's corrections alone")
    shutter: int = Field(default=-1, description="shutter index; negative leaves DM's setting")
    settling_s: float = Field(default=0.0, ge=0, description="drift settling before the exposure, s")
    gif_scripts: Literal["auto", "IF", "IFC"] = Field(
        default="auto", description="GIF script family (gs §6.2); auto probes with DoesFunctionExist"
    )
    energy_tolerance_eV: float = Field(default=0.01, gt=0, description="read-back tolerance of the energy loss")
    slit_width_tolerance_eV: float = Field(default=0.1, gt=0, description="read-back tolerance of the slit width")
    dark_method: Literal["blanked_exposure", "dark_reference_call"] = Field(
        default="blanked_exposure",
        description="dark frames as unprocessed exposures with the beam blanked by the caller, or GetDarkReference "
        "(code 7; unreliable on plugins >= 108, gs pitfall 14)",
    )
    visa_library: str = Field(default="@py", description="pyvisa backend for TCPIP SOCKET resources")
    set_energy_on_configure: bool = Field(
        default=True, description="set the GIF energy loss from CameraSettings.energy_offset_eV in configure()"
    )
    # position (along-slit) calibration: see `row_pitch_at_specimen_m`
    pixel_pitch_m: float = Field(default=14e-6, gt=0, description="CCD row pitch, m (2k GIF CCD: 14 um)")
    spectrometer_magnification: float = Field(
        default=1.0, gt=0,
        description="magnification of the GIF between the TEM's indicated magnification and the CCD (1 = none)",
    )
    position_calibration_m: float | None = Field(
        default=None, gt=0,
        description="measured specimen length per unbinned CCD row, m; overrides pitch / magnification",
    )
    optical_axis_row: float | None = Field(
        default=None, description="CCD row (fractional, unbinned) on which the optical axis lands; None = middle"
    )


@dataclass(frozen=True)
class _WireGeometry:
    """One image request as the socket carries it: equal `binning`, read area in binned pixels
    (bottom/right exclusive), and the (k_rows, k_cols) blocks the driver sums afterwards."""

    binning: int
    top: int
    left: int
    bottom: int
    right: int
    k_rows: int = 1
    k_cols: int = 1

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def units(self) -> int:
        """arrSize: 16-bit units of the wire image (gs §4.1 L1)."""
        return self.width * self.height

    @property
    def software(self) -> bool:
        return self.k_rows > 1 or self.k_cols > 1

    def bin(self, raw: np.ndarray) -> tuple[np.ndarray, int]:
        """(frame, saturated binned pixels) from the wire image: unchanged uint16 at equal binning,
        else float32 sums of k_rows x k_cols blocks; a binned pixel with any wire pixel at
        65535 counts as saturated."""
        full = raw == np.iinfo(np.uint16).max
        if self.software and raw.shape != (self.height, self.width):
            raise CommunicationError(
                f"image of {raw.shape[1]}x{raw.shape[0]} for a {self.width}x{self.height} request: cannot sum "
                f"{self.k_rows}x{self.k_cols} blocks"
            )
        if not self.software:
            return raw, int(np.count_nonzero(full))
        rows, cols = raw.shape[0] // self.k_rows, raw.shape[1] // self.k_cols
        shape = (rows, self.k_rows, cols, self.k_cols)
        summed = raw.reshape(shape).sum(axis=(1, 3), dtype=np.uint32).astype(np.float32)
        saturated = int(np.count_nonzero(full.reshape(shape).any(axis=(1, 3))))
        return summed, saturated


def _num(x: float) -> str:
    """A number as DM-script text (fixed point, ASCII)."""
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x}")
    return f"{x:.6f}"


class GifCamera(Camera):
    """`Camera` over the SerialEMCCD socket protocol (see the module docstring for the design)."""

    def __init__(self, config: GifCameraConfig | str, clock: Clock | None = None,
                 channel: BinaryChannel | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, GifCameraConfig) else GifCameraConfig(resource=config)
        self.resource = self.config.resource
        self.sensor_shape = self.config.sensor_shape
        self.clock: Clock = clock or RealClock()
        self._channel: BinaryChannel = channel or open_channel(
            self.config.resource, self.config.timeout_s, self.config.connect_timeout_s, self.config.visa_library
        )
        self._lock = threading.RLock()
        self._pending: tuple[CameraSettings, float, int] | None = None  # settings, t_start, capacity
        self._family: Literal["IF", "IFC"] | None = None if self.config.gif_scripts == "auto" else self.config.gif_scripts
        self._exists: dict[str, bool] = {}
        self.reconnects = 0  # fresh connections opened after the first (for tests and logs)
        self._opened_once = False

    # -- position calibration --------------------------------------------------------------------
    def row_pitch_at_specimen_m(self, magnification: float) -> float:
        """Specimen length seen by one unbinned CCD row, m.

        `position_calibration_m` when configured (a measured value), else
        pixel_pitch / (magnification x spectrometer_magnification), with `magnification` the
        TEM's indicated magnification (`LENS:MAG?`). The indicated value is the TEM's nominal
        calibration; a measured `position_calibration_m` is the accurate one.
        """
        if self.config.position_calibration_m is not None:
            return self.config.position_calibration_m
        if not (math.isfinite(magnification) and magnification > 0):
            raise ValueError(f"magnification {magnification}: need a positive number to calibrate the position axis")
        return self.config.pixel_pitch_m / (magnification * self.config.spectrometer_magnification)

    def position_axis_m(self, settings: CameraSettings, magnification: float, slit_length_m: float) -> tuple[float, float]:
        """(scale, offset) of a frame's position axis in m: length per binned row and the position
        of binned row 0's centre measured from the slit's first edge.

        The slit's centre sits on the optical axis, which lands on `optical_axis_row` (default
        the middle of the sensor): row r (unbinned, centre r + 0.5) is at
        (r + 0.5 - axis_row) x pitch + slit_length / 2 from the slit's first edge.
        """
        pitch = self.row_pitch_at_specimen_m(magnification)
        axis_row = self.sensor_shape[0] / 2 if self.config.optical_axis_row is None else self.config.optical_axis_row
        top = settings.area(self.sensor_shape)[0]
        b = settings.binning[0]
        return b * pitch, (top + b / 2 - axis_row) * pitch + slit_length_m / 2

    # -- connection --------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if not self._channel.is_open:
            self._channel.open()
            if self._opened_once:
                self.reconnects += 1
            self._opened_once = True

    def _drop(self) -> None:
        """Close the socket; the next call reconnects (gs §1, pitfall 5)."""
        self._channel.close()

    def close(self) -> None:
        with self._lock:
            self._pending = None
            self._drop()

    def _send(self, message: bytes, timeout_s: float) -> None:
        self._ensure_open()
        self._channel.set_timeout(timeout_s)
        try:
            self._channel.write(message)
        except DeviceTimeoutError:
            self._drop()
            raise
        except CommunicationError:
            self._drop()
            if not self.config.resend_on_send_failure:
                raise
            self._ensure_open()
            self._channel.set_timeout(timeout_s)
            try:
                self._channel.write(message)
            except CommunicationError:
                self._drop()
                raise

    def _exchange(self, message: bytes, code: int, timeout_s: float) -> P.Reply:
        """Send, then read the reply. If the server had closed the connection before any reply
        byte (e.g. another client took over, gs §1), reconnect and send once more, as SerialEM
        does for a receive that fails at once [gs §1]. A timeout is never retried."""
        self._send(message, timeout_s)
        try:
            return self._read_reply(code)
        except ConnectionClosedError as exc:
            if exc.received_bytes or not self.config.resend_on_send_failure:
                raise
        self._send(message, timeout_s)
        return self._read_reply(code)

    def _read_reply(self, code: int) -> P.Reply:
        try:
            reply = P.read_reply(code, self._channel.read_exact)
        except CommunicationError:  # timeout, garbled header, closed connection: never reuse
            self._drop()
            raise
        if reply.code < 0:
            raise InstrumentError(
                f"{P.Fn(code).name}: protocol error {P.describe_code(reply.code)}", self.resource, reply.code
            )
        return reply

    def _require_idle(self) -> None:
        if self._pending is not None:
            raise RuntimeError("an exposure is in flight: call read_frame() or abort() first")

    def call(self, code: int, longs: tuple[int, ...] = (), bools: tuple[bool, ...] = (),
             doubles: tuple[float, ...] = (), array: bytes | None = None, *, check: bool = True,
             timeout_s: float | None = None) -> P.Reply:
        """One request/reply exchange for a non-image function. Raises `InstrumentError` on a
        negative code, and on a positive one when `check` is true."""
        spec = P.FunctionTable.spec(code)
        if spec.has_image:
            raise ValueError(f"{spec.name} returns image data; use the image methods")
        message = P.pack_request(code, longs, bools, doubles, array)
        with self._lock:
            self._require_idle()
            reply = self._exchange(message, code, timeout_s or self.config.timeout_s)
        if check and reply.code != 0:
            raise InstrumentError(f"{spec.name} failed: {P.describe_code(reply.code)}", self.resource, reply.code)
        return reply

    # -- image transfer (gs §5) -------------------------------------------------------------------
    def _receive_image(self, code: int, capacity_units: int, dtype: np.dtype) -> np.ndarray:
        """Read the image reply header and the chunked data, sending the handshake between chunks."""
        spec = P.FunctionTable.spec(code)
        reply = self._read_reply(code)
        if reply.code != 0:  # pitfall 8: test the code first; no data follow a failure
            raise InstrumentError(f"{spec.name} failed: {P.describe_code(reply.code)}", self.resource, reply.code)
        units, width, height, n_chunks = reply.longs
        nbytes = P.image_bytes(spec, units)
        itemsize = np.dtype(dtype).itemsize
        if not (0 < units <= capacity_units) or width <= 0 or height <= 0 or width * height * itemsize != nbytes:
            self._drop()
            raise CommunicationError(
                f"{spec.name}: inconsistent image header (units {units}, {width}x{height}, capacity {capacity_units})",
                self.resource,
            )
        try:
            sizes = P.chunk_sizes(nbytes, n_chunks)
        except CommunicationError:
            self._drop()
            raise
        out = np.empty(height * width, dtype=dtype)
        view = memoryview(out).cast("B")
        offset = 0
        try:
            for k, size in enumerate(sizes):
                if k:
                    self._channel.write(P.HANDSHAKE)
                self._channel.read_into(view[offset: offset + size])
                offset += size
        except CommunicationError:
            self._drop()
            raise
        return out.reshape(height, width)

    def _image_call(self, code: int, longs: tuple[int, ...], doubles: tuple[float, ...], capacity: int,
                    dtype: np.dtype, timeout_s: float) -> np.ndarray:
        with self._lock:
            self._require_idle()
            self._send(P.pack_request(code, longs, (), doubles), timeout_s)
            return self._receive_image(code, capacity, dtype)

    # -- geometry ------------------------------------------------------------------------------
    def _wire_geometry(self, settings: CameraSettings) -> "_WireGeometry":
        """What crosses the socket for `settings` (gs §5.3, pitfall 10; module docstring)."""
        b_rows, b_cols = settings.binning
        g = math.gcd(b_rows, b_cols)
        top, left, _, _ = settings.area(self.sensor_shape)
        if top % g or left % g:
            raise ValueError(f"readout_area {settings.readout_area} does not start on a multiple of binning {g}")
        rows, cols = settings.frame_shape(self.sensor_shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"readout_area {settings.readout_area} is smaller than one binned pixel")
        k_rows, k_cols = b_rows // g, b_cols // g
        t, l_ = top // g, left // g
        return _WireGeometry(g, t, l_, t + rows * k_rows, l_ + cols * k_cols, k_rows, k_cols)

    def _acquire_request(self, settings: CameraSettings, processing: int) -> tuple[bytes, "_WireGeometry"]:
        w = self._wire_geometry(settings)
        longs = (w.units, w.width, w.height, processing, w.binning, w.top, w.left, w.bottom, w.right,
                 self.config.shutter, 0, 0, self.config.corrections)
        return P.pack_request(P.Fn.GetAcquiredImage, longs, (), (settings.exposure_s, self.config.settling_s)), w

    def _prepare_shot(self) -> None:
        """SetReadMode and SelectCamera before every acquisition (gs §8.1, pitfall 16)."""
        self.call(P.Fn.SetReadMode, (self.config.read_mode,), (), (1.0,))
        self.call(P.Fn.SelectCamera, (self.config.camera_index,))

    # -- Camera interface -----------------------------------------------------------------------
    def identify(self) -> InstrumentIdentity:
        try:  # plugins older than 2015 answer −1 (unknown code) to GetPluginVersion (gs §8.1)
            plugin_txt = str(self.call(P.Fn.GetPluginVersion).longs[0])
        except InstrumentError as exc:
            if exc.code != P.ERR_UNKNOWN_FUNCTION:
                raise
            plugin_txt = "< 2015"
        dm = self.call(P.Fn.GetDMVersion).longs[0]
        cameras = self.call(P.Fn.GetNumberOfCameras).longs[0]
        return InstrumentIdentity(
            vendor="Gatan",
            model="GIF camera (SerialEMCCD socket)",
            serial=f"camera {self.config.camera_index} of {cameras}",
            firmware=f"{P.decode_dm_version(dm)}, SerialEMCCD plugin {plugin_txt}",
            resource=self.resource,
        )

    def _configure(self, settings: CameraSettings) -> None:
        self._wire_geometry(settings)  # validates geometry before touching the instrument
        with self._lock:
            self._require_idle()
        if not self.config.set_energy_on_configure:
            return
        if self._settings is None or self._settings.energy_offset_eV != settings.energy_offset_eV:
            self.set_energy_loss(settings.energy_offset_eV)

    def _start_exposure(self) -> float:
        settings = self._settings
        assert settings is not None  # checked by Camera.start_exposure
        message, wire = self._acquire_request(settings, PROCESSING_CODES[settings.processing])
        with self._lock:
            self._require_idle()
            self._prepare_shot()  # its round trips also revive a connection another client took over
            self._send(message, self.config.timeout_s)
            t_start = self.clock.now()
            self._pending = (settings, t_start, wire)
        return t_start

    def read_frame(self) -> Frame:
        with self._lock:
            if self._pending is None:
                raise RuntimeError("read_frame without start_exposure")
            settings, t_start, wire = self._pending
            self._pending = None
            self._channel.set_timeout(settings.exposure_s + self.config.readout_timeout_s)
            raw = self._receive_image(P.Fn.GetAcquiredImage, wire.units, np.dtype("<u2"))
        data, saturated = wire.bin(raw)
        metadata: dict[str, float | str] = {"source": self.resource, "wire_binning": float(wire.binning)}
        if wire.software:
            metadata["software_binning"] = f"{wire.k_rows}x{wire.k_cols}"
        return Frame(data=data, t_start_s=t_start, settings=settings, saturated_px=saturated, metadata=metadata)

    def abort(self) -> None:
        """Drop an in-flight acquisition: the connection is closed, its late reply discarded."""
        with self._lock:
            if self._pending is not None:
                self._pending = None
                self._drop()

    def dark_reference(self, exposure_s: float, n_frames: int = 10) -> np.ndarray:
        """Mean of `n_frames` dark frames at `exposure_s` with the present geometry, float32.

        Default method: unprocessed exposures with the beam blanked by the caller (robust against
        gs pitfall 14); `dark_method="dark_reference_call"` uses GetDarkReference (code 7).
        """
        if n_frames < 1:
            raise ValueError("n_frames must be >= 1")
        base = self._settings or CameraSettings(exposure_s=exposure_s)
        settings = CameraSettings.model_validate(
            {**base.model_dump(), "exposure_s": exposure_s, "processing": "unprocessed"}
        )
        acc: np.ndarray | None = None
        timeout = exposure_s + self.config.readout_timeout_s
        for _ in range(n_frames):
            if self.config.dark_method == "dark_reference_call":
                w = self._wire_geometry(settings)
                longs = (w.units, w.width, w.height, w.binning, w.top, w.left, w.bottom, w.right,
                         self.config.shutter, 0, self.config.corrections)
                with self._lock:
                    self._require_idle()
                    self._prepare_shot()
                raw = self._image_call(P.Fn.GetDarkReference, longs, (exposure_s, self.config.settling_s),
                                       w.units, np.dtype("<u2"), timeout)
            else:
                message, w = self._acquire_request(settings, PROCESSING_CODES["unprocessed"])
                with self._lock:
                    self._require_idle()
                    self._prepare_shot()
                    self._send(message, timeout)
                    raw = self._receive_image(P.Fn.GetAcquiredImage, w.units, np.dtype("<u2"))
            frame, _ = w.bin(raw)
            acc = frame.astype(np.float64) if acc is None else acc + frame
        assert acc is not None
        return (acc / n_frames).astype(np.float32)

    def gain_reference(self) -> np.ndarray:
        """DM's gain reference at binning 1 (GetGainReference, code 8: float32, 4 B/pixel)."""
        rows, cols = self.sensor_shape
        with self._lock:
            self._require_idle()
            self._prepare_shot()
        return self._image_call(P.Fn.GetGainReference, (rows * cols, cols, rows, 1), (), rows * cols,
                                np.dtype("<f4"), self.config.timeout_s + self.config.readout_timeout_s)

    # -- DM script (gs §6) ----------------------------------------------------------------------
    def execute_script(self, script: str, select_camera: bool = False) -> float:
        """Run DM script; return the value passed to `Exit`. Raises `InstrumentError` when the
        return code is not 0 or the value is the −999 sentinel (gs §6.1, pitfalls 11, 12, 19)."""
        reply = self.call(P.Fn.ExecuteScript, (), (select_camera,), (), P.pack_script(script), check=False)
        value = reply.doubles[0]
        if reply.code != 0 or value == P.SCRIPT_ERROR_SENTINEL:
            raise InstrumentError(
                f"DM script failed (code {reply.code}, value {value}): {script!r}", self.resource, reply.code or 1
            )
        return value

    def function_exists(self, name: str) -> bool:
        """`DoesFunctionExist` probe (gs §6.1), cached per connection session."""
        if not name.isidentifier():
            raise ValueError(f"not a DM function name: {name!r}")
        if name not in self._exists:
            value = self.execute_script(f'if ( DoesFunctionExist("{name}") ) {{ Exit(1.0); }} else {{ Exit(-1.0); }}')
            self._exists[name] = value > 0
        return self._exists[name]

    def emulated_time_scale(self) -> float | None:
        """The paced clock an insitem emulator announces through its DM-script function
        `DM_TIME_SCALE_FUNCTION`; None for a real DigitalMicrograph, which lacks the function
        (asked with DoesFunctionExist, so a real DM runs no failing script; drivers/emulated.py)."""
        if not self.function_exists(DM_TIME_SCALE_FUNCTION):
            return None
        return check_time_scale(self.execute_script(f"Exit({DM_TIME_SCALE_FUNCTION}())"), "the emulator's time scale")

    @property
    def gif_family(self) -> Literal["IF", "IFC"]:
        """Script family in use (gs §6.2): IF names win when present, as in Leginon/instamatic."""
        if self._family is None:
            if self.function_exists("IFGetEnergyLoss"):
                self._family = "IF"
            elif self.function_exists("IFCGetSpectrumOffset"):
                self._family = "IFC"
            else:
                raise InstrumentError("no GIF energy-loss script functions (IF/IFC) in this DM", self.resource)
        return self._family

    def energy_loss_eV(self) -> float:
        """Energy loss (spectrum offset / drift tube) read from the GIF, eV."""
        if self.gif_family == "IF":
            return self.execute_script("Exit(IFGetEnergyLoss())")
        return self.execute_script("Exit(IFCGetSpectrumOffset())")

    def set_energy_loss(self, energy_eV: float) -> None:
        """Set the energy loss (drift tube offset) in eV and verify it by reading it back.

        IF family: `IFSetEnergyOffset(3, x)` (drift tube; returns nothing, so sent bare, pitfall
        20) when present, else `IFSetEnergyLoss(x)` in the if/Exit form; if the read-back differs
        the HT offset is zeroed and checked again (Leginon's procedure, gs §6.2). IFC family:
        spectrum offset switched on, then `IFCSetSpectrumOffset(x)`. Sign convention: a +x eV
        "Shift" typed in the Quantum LS panel reads back as −x (gs §6.2); this sets the loss.
        """
        x = _num(energy_eV)
        if self.gif_family == "IF":
            if self.function_exists("IFSetEnergyOffset"):
                self.execute_script(f"IFSetEnergyOffset(3, {x}); Exit(1.0)")
            else:
                self._check_truth(f"if ( IFSetEnergyLoss({x}) ) {{ Exit(1.0); }} else {{ Exit(-1.0); }}")
            got = self.energy_loss_eV()
            if abs(got - energy_eV) > self.config.energy_tolerance_eV and self.function_exists("IFSetEnergyOffset"):
                self.execute_script("IFSetEnergyOffset(2, 0); Exit(1.0)")
                got = self.energy_loss_eV()
        else:
            self.execute_script(f"if (IFCGetOffsetOn() == 0) IFCSetOffsetOn(1); IFCSetSpectrumOffset({x}); Exit(1.0)")
            got = self.energy_loss_eV()
        if abs(got - energy_eV) > self.config.energy_tolerance_eV:
            raise InstrumentError(f"energy loss set to {energy_eV} eV but reads back {got} eV", self.resource)

    def _check_truth(self, script: str) -> None:
        if self.execute_script(script) <= 0:
            raise InstrumentError(f"DM refused: {script!r}", self.resource)

    def filter_slit(self) -> tuple[bool, float]:
        """(inserted, width_eV) of the GIF energy-selecting slit."""
        if self.gif_family == "IF":
            inserted = self.execute_script("if ( IFGetSlitIn() ) { Exit(1.0); } else { Exit(-1.0); }") > 0
            width = self.execute_script("Exit(IFGetSlitWidth())")
        else:
            inserted = self.execute_script("Exit(IFCGetSlitIn())") > 0
            width = self.execute_script("Exit(IFCGetSlitWidth())")
        return inserted, width

    def set_filter_slit(self, inserted: bool, width_eV: float | None = None) -> None:
        """Insert/retract the energy slit and optionally set its width (eV), then verify.

        The state is read first and only changes are sent: a slit command costs about 1.4 s even
        when nothing changes (gs §6.2). For SR-EELS spectroscopy the slit is normally out.
        """
        now_in, now_width = self.filter_slit()
        if self.gif_family == "IF":
            if width_eV is not None and abs(now_width - width_eV) > self.config.slit_width_tolerance_eV:
                self._check_truth(
                    f"if ( IFSetSlitWidth({_num(width_eV)}) ) {{ IFWaitForFilter(); Exit(1.0); }} else {{ Exit(-1.0); }}"
                )
            if now_in != inserted:
                self.execute_script(f"IFSetSlitIn({int(inserted)}); IFWaitForFilter(); Exit(1.0)")
        else:
            if width_eV is not None and abs(now_width - width_eV) > self.config.slit_width_tolerance_eV:
                self.execute_script(f"IFCSetSlitWidth({_num(width_eV)}); Exit(1.0)")
            if now_in != inserted:
                self.execute_script(f"IFCSetSlitIn({int(inserted)}); Exit(1.0)")
        got_in, got_width = self.filter_slit()
        if got_in != inserted or (width_eV is not None and abs(got_width - width_eV) > self.config.slit_width_tolerance_eV):
            raise InstrumentError(
                f"slit set to inserted={inserted}, width={width_eV} eV; reads back {got_in}, {got_width} eV",
                self.resource,
            )
