"""The run file: one crash-safe, incrementally written, HyperSpy-readable HDF5 file per run.

Layout (design.md §7; decision record docs/decisions/0002-run-file-layout.md)::

    /                               attrs file_format="HyperSpy", file_format_version="3.3",
                                    insitem_layout, software_version, created_utc,
                                    status, status_reason, status_utc   (modified in place)
    /Experiments/<window>/data      float32 (exposure, position, energy), grows along axis 0,
                                    one exposure per chunk
    /Experiments/<window>/axis-0    time: name, units "s", size (updated), navigate, is_binned,
                                    dataset `axis` = exposure start times (non-uniform axis)
    /Experiments/<window>/axis-1    position along the slit: scale, offset, units (e.g. nm)
    /Experiments/<window>/axis-2    energy loss: eV, navigate=False, is_binned=True
    /Experiments/<window>/metadata  Signal/signal_type="EELS", General/{title, date, time,
                                    time_zone} (the run's start, UTC),
                                    Acquisition_instrument/TEM/{beam_energy keV,
                                    convergence_angle mrad, Detector/EELS/{collection_angle mrad,
                                    exposure s, dwell_time s, frame_number}},
                                    Acquisition_instrument/Potentiostat/{potential V, current A}:
                                    datasets, one value per exposure, growing with axis-0
    /Experiments/<window>/original_metadata   attrs: the window declaration
    /insitem/exposures              table: one row per completed exposure (all windows)
    /insitem/electrochemistry       table: t, voltage, current, cycle, step, compliance
    /insitem/events                 table: t, unix time, level, message
    /insitem/steps                  table: step index, name, start/end time, status
    /insitem/protocol               the protocol text (YAML) as one string
    /insitem/instruments/<role>     attrs: vendor, model, serial, firmware, resource
    /insitem/ground_truth/...       (simulated runs) t_s, one (time, position) array per
                                    profile, and a table of scalar cell-state values

SWMR (single writer, multiple readers) forbids creating any object or attribute once
`swmr_mode` is on, so `RunFile.create` makes every group, dataset and attribute up front; the
run only extends datasets, writes rows and modifies existing attributes in place. A viewer opens
the file with ``h5py.File(path, "r", swmr=True)`` (or `insitem.acquisition.runfile_read`) or
``hyperspy.api.load(path, file_format="hspy", swmr=True)`` at any time.

Order of writes for one exposure: frame into `data` → its start time into `axis-0/axis` and its
potential and current into the metadata's Potentiostat arrays → `axis-0.size` → flush → the exposure record → flush. The exposure record is the commit marker,
written only once the image is on disk: a reader counts an exposure as complete only when its
record exists (`runfile_read` trims to min(data, axis, records)); `RunFile.reopen_for_append`
trims a crashed file (images, time axis, per-exposure metadata) back to that count, and drops trailing images that hold NaN (never written).
An exposure cut short (an immediate stop, a stall) is recorded with ``partial = 1`` and its true
beam-on time `beam_on_s` (its `exposure_s` is the time summed into its image).

A full disk: before each write that grows the file the writer checks the free space (and the
process's file-size limit) and stops with one line ("disk full") while a reserve is left to close
the file properly. A write that fails anyway (another process took the space) leaves HDF5's state
unusable (continuing, or closing, ends in SIGSEGV at exit, measured): the file is then abandoned
as the last flush left it, nothing more is written, and `insitem` ends the process without HDF5's
exit handlers (`abandoned_files`).

Crash survival: a process killed while writing leaves the superblock's "open for write" status
flags set (HDF5 File Format Specification, superblock versions 2 and 3). Read-only SWMR opens
ignore them, non-SWMR opens refuse the file. `clear_open_flags` clears them (what the HDF5
``h5clear -s`` tool does) so the file can be reopened for append or opened by any HDF5 reader.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import math
import os
import socket
import struct
import sys
import time
from dataclasses import asdict
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import h5py
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from insitem.acquisition.h5checksum import lookup3_checksum
from insitem.acquisition.runfile_errors import RunFileError, RunFileUnreadable  # noqa: F401 - importable from here too
from insitem.drivers.interfaces import CameraSettings, Frame, InstrumentIdentity, Reading

# ---------------------------------------------------------------------------------------------
# Constants of the layout

HYPERSPY_FORMAT = "HyperSpy"
HYPERSPY_FORMAT_VERSION = "3.3"
#: Pass as ``hyperspy.api.load(path, file_format=HYPERSPY_FILE_FORMAT)``: the ``.h5`` extension is
#: claimed by several RosettaSciIO readers, so HyperSpy infers the reader only for ``.hspy`` names.
HYPERSPY_FILE_FORMAT = "hspy"
LAYOUT_NAME = "insitem-run"
LAYOUT_VERSION = 1
INSITEM_GROUP = "insitem"

# Free space kept for closing a run file properly (status, buffered electrochemistry, metadata
# flush): a write that would leave less stops the run with "disk full" instead (a few hundred kB
# suffice; measured in tests/faults/test_runfile_faults.py).
DISK_RESERVE_BYTES = 1 << 20
#: tests turn the free-space check off to drive HDF5 into a real failed write
SPACE_CHECK = True

# Raw-data chunk cache per dataset of the writer. A run appends and never reads back, so the
# cache only has to hold the partly filled chunks of the small extendable tables (an
# electrochemistry chunk is ~0.6 MiB); a spectrum-image chunk (one exposure, 1.3-2.7 MB) is
# larger and goes straight to the file. HDF5 2.0's default (8 MiB per dataset) kept every
# window's last exposure in memory: ~24 MB of resident memory for nothing (docs/performance/dry-run.md).
WRITER_CHUNK_CACHE_BYTES = 1 << 20

_T = TypeVar("_T")

RunStatus = Literal["running", "completed", "stopped", "failed", "interrupted"]
FINAL_STATUSES: tuple[str, ...] = ("completed", "stopped", "failed", "interrupted")
StepStatus = Literal["running", "completed", "failed", "skipped", "interrupted"]
EventLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# Fixed-length byte strings everywhere a value changes during the run: SWMR readers and
# in-place attribute modification need fixed-size types (variable-length strings live on the
# global heap, which SWMR does not cover).
_STATUS_BYTES = 16
_REASON_BYTES = 2048
_UTC_BYTES = 32
_WRITER_BYTES = 128
_WINDOW_BYTES = 32
_LEVEL_BYTES = 8
_STEP_NAME_BYTES = 64

EXPOSURE_DTYPE = np.dtype(
    [
        ("window", f"S{_WINDOW_BYTES}"),
        ("index", "<i8"),
        ("t_start_s", "<f8"),
        ("exposure_s", "<f8"),
        ("potential_V", "<f8"),
        ("current_A", "<f8"),
        ("cycle", "<i4"),
        ("step", "<i4"),
        ("dose_e_per_m2", "<f8"),
        ("total_dose_e_per_m2", "<f8"),
        ("energy_offset_eV", "<f8"),
        ("saturated_px", "<i8"),
        ("partial", "u1"),  # 1: cut short (immediate stop, stall); the image is the part read out
        ("beam_on_s", "<f8"),  # true beam-on time of this image (s); = exposure_s unless partial
        ("kind", "S16"),  # science | tracking (a drift-tracking frame, window "drift-tracking": analysis skips it)
    ]
)
EXPOSURE_KINDS = ("science", "tracking")
EC_DTYPE = np.dtype(
    [
        ("t_s", "<f8"),
        ("voltage_V", "<f8"),
        ("current_A", "<f8"),
        ("cycle", "<i4"),
        ("step", "<i4"),
        ("compliance", "u1"),
    ]
)
DRIFT_DTYPE = np.dtype(
    [
        ("t_s", "<f8"),  # rig-clock time of the image the estimate comes from
        ("window", f"S{_WINDOW_BYTES}"),
        ("index", "<i8"),  # the image's index in its window
        ("measured_m", "<f8"),  # displacement of the specimen's image along the slit since the first image
        ("sigma_m", "<f8"),  # its 1-sigma uncertainty
        ("image_shift_m", "<f8"),  # the image shift (along the slit) in force after this row's action
        ("action", "S16"),  # measured | shift-read | corrected | within-dead-band | refused | limited | stage-read | stage
        ("kind", "S16"),  # of the image the row is about: science (a window's own image) | tracking (a tracking frame)
        ("dose_e_per_m2", "<f8"),  # measured rows: the dose of that image; NaN on action rows (they deliver none)
        ("stage_y_m", "<f8"),  # the stage y in force after this row's action (NaN: the loop has not read the stage)
    ]
)
STEP_DTYPE = np.dtype(
    [
        ("index", "<i4"),
        ("name", f"S{_STEP_NAME_BYTES}"),
        ("t_start_s", "<f8"),
        ("t_end_s", "<f8"),
        ("status", f"S{_STATUS_BYTES}"),
    ]
)


def _event_dtype(message_bytes: int) -> np.dtype:
    return np.dtype(
        [("t_s", "<f8"), ("unix_time_s", "<f8"), ("level", f"S{_LEVEL_BYTES}"), ("message", f"S{message_bytes}")]
    )


# ---------------------------------------------------------------------------------------------
# Declarations (everything must be known before SWMR starts)


class WindowSpec(BaseModel):
    """One energy window of the spectrometer camera: one spectrum-image series in the file.

    `energy_offset_eV` is the energy loss at the centre of the first channel and
    `dispersion_eV_per_channel` the width of one (binned) channel, so channel k sits at
    offset + k * dispersion — HyperSpy's uniform-axis convention. Position: row r sits at
    `position_offset + r * position_scale` in `position_units` (nm by default), along the slit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$", description="group name under /Experiments")
    n_rows: int = Field(gt=0, description="rows per frame (position along the slit)")
    n_channels: int = Field(gt=0, description="columns per frame (energy-loss channels)")
    energy_offset_eV: float = Field(description="energy loss at the centre of channel 0, eV")
    dispersion_eV_per_channel: float = Field(gt=0, description="eV per (binned) channel")
    position_scale: float = Field(default=1.0, gt=0, description="position step per row, in position_units")
    position_offset: float = Field(default=0.0, description="position of row 0, in position_units")
    position_units: str = Field(default="nm", max_length=16)
    title: str = Field(default="", description="metadata/General/title; defaults to the name")
    exposure_s: float | None = Field(default=None, gt=0, description="time summed into one image, s (metadata EELS exposure)")
    frames: int = Field(default=1, ge=1, description="sub-exposures summed into one image (metadata EELS frame_number)")
    kind: Literal["science", "tracking"] = Field(
        default="science", description="science: a protocol window; tracking: the drift-tracking frames (docs/drift.md)"
    )

    @classmethod
    def from_camera_settings(
        cls,
        name: str,
        settings: CameraSettings,
        sensor_shape: tuple[int, int],
        *,
        position_scale: float = 1.0,
        position_offset: float = 0.0,
        position_units: str = "nm",
        title: str = "",
        frames: int = 1,
        kind: Literal["science", "tracking"] = "science",
    ) -> "WindowSpec":
        """The window a camera configured with `settings` produces (binning and readout area
        applied); one image sums `frames` frames of `settings.exposure_s` each."""
        rows, cols = settings.frame_shape(sensor_shape)
        energies = settings.energy_axis_eV(sensor_shape)
        return cls(
            name=name,
            n_rows=rows,
            n_channels=cols,
            energy_offset_eV=float(energies[0]),
            dispersion_eV_per_channel=settings.dispersion_eV_per_px * settings.binning[1],
            position_scale=position_scale,
            position_offset=position_offset,
            position_units=position_units,
            title=title,
            exposure_s=settings.exposure_s * frames,
            frames=frames,
            kind=kind,
        )


class GroundTruthSpec(BaseModel):
    """What a simulated run records of its world's ground truth (design.md §6).

    Profiles are arrays over `n_positions` points along the slit (e.g. Li fraction, Ti3+
    fraction, O-O distance in m); scalars are cell-state numbers (total dose, state of charge,
    charge passed, ...). Each `write_ground_truth` appends one row to each.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_positions: int = Field(gt=0)
    position_m: tuple[float, ...] | None = Field(default=None, description="position of each profile point, m")
    profiles: tuple[str, ...] = ("li_fraction", "ti3_fraction", "oo_distance_m")
    scalars: tuple[str, ...] = (
        "total_dose_e_per_m2", "li_retained_fraction", "state_of_charge", "charge_C", "cell_voltage_V",
        "specimen_drift_y_m", "specimen_drift_x_m", "image_displacement_y_m",
    )

    @model_validator(mode="after")
    def _check(self) -> "GroundTruthSpec":
        if self.position_m is not None and len(self.position_m) != self.n_positions:
            raise ValueError(f"position_m has {len(self.position_m)} points, n_positions is {self.n_positions}")
        for names in (self.profiles, self.scalars):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate ground-truth names in {names}")
            for n in names:
                if not n.isidentifier() or n == "t_s":
                    raise ValueError(f"ground-truth name {n!r} must be an identifier other than 't_s'")
        return self


class RunFileConfig(BaseModel):
    """Everything the run file must know before the run starts (SWMR creates nothing later).

    Angles are semi-angles in mrad, beam energy in keV (HyperSpy's metadata units).
    `ec_flush_interval_s` is wall-clock time (crash safety is about wall time, also in dry runs
    on a virtual clock); `ec_block_rows` bounds the electrochemistry held in memory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    title: str = ""
    windows: tuple[WindowSpec, ...] = Field(min_length=1)
    beam_energy_keV: float = Field(gt=0, le=1000)
    convergence_angle_mrad: float = Field(ge=0)
    collection_angle_mrad: float = Field(gt=0)
    protocol_text: str = ""
    software_version: str = ""
    instruments: dict[str, InstrumentIdentity] = Field(default_factory=dict)
    ground_truth: GroundTruthSpec | None = None
    ec_flush_interval_s: float = Field(default=5.0, gt=0)
    ec_block_rows: int = Field(default=8192, ge=1, le=1_000_000)
    event_message_bytes: int = Field(default=512, ge=16, le=65536)
    compression: Literal["gzip", "lzf"] | None = Field(
        default=None, description="filter for the spectrum images; None = fastest writes"
    )

    @field_validator("windows")
    @classmethod
    def _unique(cls, windows: tuple[WindowSpec, ...]) -> tuple[WindowSpec, ...]:
        names = [w.name for w in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"window names must be unique, got {names}")
        return windows

    @field_validator("instruments")
    @classmethod
    def _roles(cls, instruments: dict[str, InstrumentIdentity]) -> dict[str, InstrumentIdentity]:
        for role in instruments:
            if not role or "/" in role:
                raise ValueError(f"instrument role {role!r} must be a non-empty name without '/'")
        return instruments


# ---------------------------------------------------------------------------------------------
# Small helpers


def _fixed(text: str, n_bytes: int) -> np.bytes_:
    """UTF-8 encode and cut to at most `n_bytes` without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) > n_bytes:
        raw = raw[:n_bytes].decode("utf-8", errors="ignore").encode("utf-8")
    return np.bytes_(raw)


def _writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _live_writer(path: Path) -> str:
    """Why the recorded writer of `path` may still be running ("" when it is surely gone)."""
    from insitem.acquisition.h5open import open_for_reading

    with open_for_reading(path) as f:
        writer = f.attrs.get("writer", b"").decode()
    host, _, pid_text = writer.rpartition(":")
    if not pid_text.isdigit():
        return ""
    if host != socket.gethostname():
        return f"written by {writer} on another host, which may still be running"
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass  # exists, owned by someone else
    return f"still open for writing by process {pid_text}"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _package_version() -> str:
    try:
        return _importlib_metadata.version("insitem")
    except _importlib_metadata.PackageNotFoundError:  # running from a plain checkout
        return "unknown"


def _set_fixed_attr(obj: h5py.Group | h5py.Dataset, name: str, text: str, n_bytes: int) -> None:
    """Create a fixed-length string attribute of `n_bytes` (so it can be modified under SWMR)."""
    obj.attrs.create(name, _fixed(text, n_bytes), dtype=f"S{n_bytes}")


def _modify_fixed_attr(obj: h5py.Group | h5py.Dataset, name: str, text: str) -> None:
    size = obj.attrs.get_id(name).dtype.itemsize
    obj.attrs.modify(name, _fixed(text, size))


# HDF5 superblock status flags -----------------------------------------------------------------
# h5py exposes no call to clear them (the C library does it only inside the h5clear tool), so
# this is written by hand from the HDF5 File Format Specification, "Superblock" (versions 2/3):
# signature(8) version(1) size-of-offsets(1) size-of-lengths(1) status-flags(1) then four
# addresses, then a Jenkins lookup3 checksum of everything before it.

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _find_superblock(fh: Any) -> int:
    # The superblock sits at 0 or, after a user block, at 512, 1024, 2048, ... bytes.
    offset = 0
    size = os.fstat(fh.fileno()).st_size
    while offset < size:
        fh.seek(offset)
        if fh.read(8) == _HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    raise RunFileError("no HDF5 superblock found")


def check_writable(path: str | os.PathLike[str]) -> None:
    """RunFileUnreadable (one line) unless this process may write `path` in place."""
    try:
        with open(path, "r+b"):
            pass
    except PermissionError:
        raise RunFileUnreadable(
            f"{path}: no permission to write the file, and continuing a run appends to it "
            "(copy it somewhere writable, or run as its owner)"
        ) from None
    except OSError as exc:
        raise RunFileUnreadable(f"{path}: cannot open the file for writing: {exc.strerror or exc}") from None


def open_flags(path: str | os.PathLike[str]) -> int:
    """The superblock's file-consistency flags (0 for a cleanly closed file)."""
    with open(path, "rb") as fh:
        base = _find_superblock(fh)
        fh.seek(base + 8)
        version, _, _, flags = fh.read(4)
    return flags if version >= 2 else 0


def clear_open_flags(path: str | os.PathLike[str]) -> bool:
    """Clear the "open for (SWMR) write" flags a killed writer leaves behind (``h5clear -s``).

    Returns True when flags were set and have been cleared. Only for a file no process has open
    for writing: the caller must know the writer is gone (HDF5 itself refuses to open a file a
    live writer holds, through its file lock).
    """
    with open(path, "r+b") as fh:
        base = _find_superblock(fh)
        fh.seek(base)
        head = fh.read(12)
        version, size_of_offsets, flags = head[8], head[9], head[11]
        if version < 2 or flags == 0:
            return False
        n = 12 + 4 * size_of_offsets
        fh.seek(base)
        block = bytearray(fh.read(n + 4))
        stored = struct.unpack("<I", block[n : n + 4])[0]
        if lookup3_checksum(bytes(block[:n])) != stored:
            raise RunFileError(f"{path}: superblock checksum does not match; not touching the file")
        block[11] = 0
        block[n : n + 4] = struct.pack("<I", lookup3_checksum(bytes(block[:n])))
        fh.seek(base)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True


# ---------------------------------------------------------------------------------------------
# The writer


class RunFile:
    """Writer of one run file. Create with `RunFile.create`, continue with `reopen_for_append`.

    Every public write keeps the file readable: exposures are flushed as they arrive,
    electrochemistry is buffered in memory (at most `ec_block_rows` rows) and flushed every
    `ec_flush_interval_s` of wall time, and `close(status, reason)` stamps the final status.
    Use as a context manager: leaving on an exception closes with status ``failed`` (or
    ``interrupted`` for KeyboardInterrupt) and the exception text as the reason.
    Not thread-safe: one writer thread (h5py serialises HDF5 calls anyway).
    """

    def __init__(self, h5: h5py.File, config: RunFileConfig, *, wall_clock: Callable[[], float]) -> None:
        # Use `create` or `reopen_for_append`; this binds an already laid-out, SWMR-mode file.
        self._f = h5
        self.config = config
        self.path = Path(h5.filename)
        self._wall_clock = wall_clock
        self._closed = False
        self._broken = ""
        self._disk_full = False
        _watch_hdf5_write_errors()
        self._status: str = "running"
        self._windows = {w.name: w for w in config.windows}
        root = h5[INSITEM_GROUP]
        self._data = {w.name: h5[f"Experiments/{w.name}/data"] for w in config.windows}
        self._taxis = {w.name: h5[f"Experiments/{w.name}/axis-0/axis"] for w in config.windows}
        self._tgroup = {w.name: h5[f"Experiments/{w.name}/axis-0"] for w in config.windows}
        # per-exposure metadata (absent in files made before it existed)
        self._per_exposure = {w.name: _per_exposure_datasets(h5[f"Experiments/{w.name}"]) for w in config.windows}
        self._exposures: h5py.Dataset = root["exposures"]
        self._ec: h5py.Dataset = root["electrochemistry"]
        self._events: h5py.Dataset = root["events"]
        self._steps: h5py.Dataset = root["steps"]
        self._drift: h5py.Dataset | None = root.get("drift")  # absent in files made before drift tracking
        self._event_dtype = self._events.dtype
        self._count = {name: int(ds.shape[0]) for name, ds in self._data.items()}
        self._ec_buffer = np.zeros(config.ec_block_rows, dtype=EC_DTYPE)
        self._ec_fill = 0
        self._last_flush = wall_clock()
        self._step_rows: dict[int, int] = {int(ix): row for row, ix in enumerate(self._steps["index"][...])}
        self._total_dose = float(np.nansum(self._exposures["dose_e_per_m2"][...])) if self._exposures.shape[0] else 0.0
        self._tracking_dose = 0.0
        if self._exposures.shape[0] and "kind" in (self._exposures.dtype.names or ()):
            rec = self._exposures[...]
            self._tracking_dose = float(np.nansum(rec["dose_e_per_m2"][rec["kind"] == b"tracking"]))
        self._gt = root["ground_truth"] if config.ground_truth is not None else None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        config: RunFileConfig,
        *,
        overwrite: bool = False,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> "RunFile":
        """Lay out the whole file, then switch to SWMR mode (status ``running``)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise RunFileError(f"{path} exists; refusing to overwrite a run file")
        h5 = h5py.File(path, "w", libver="latest", rdcc_nbytes=WRITER_CHUNK_CACHE_BYTES)
        _into_swmr(h5, lambda f: _lay_out(f, config))
        return cls(h5, config, wall_clock=wall_clock)

    @classmethod
    def reopen_for_append(
        cls,
        path: str | os.PathLike[str],
        *,
        force: bool = False,
        wall_clock: Callable[[], float] = time.monotonic,
        t_s: float = math.nan,
    ) -> "RunFile":
        """Continue an interrupted (or crashed) run file: status back to ``running``; `t_s` is the
        rig-clock time the run continues at (the time of the "resumed" event).

        Steps left ``running`` are ended ``interrupted`` at the last time the file recorded.

        Clears the open-for-write flags a killed writer left, trims every window back to its
        last committed exposure (the exposure record is the commit marker) and logs the resume.

        A SWMR writer holds no HDF5 file lock, so a second writer is kept out here: the file
        names its writer (host:pid); if flags say "open for write" and that process is alive
        on this host (or the host is another one, which cannot be checked), this refuses
        unless `force=True`.
        """
        path = Path(path)
        if not path.exists():
            raise RunFileUnreadable(f"{path}: no such run file")
        check_writable(path)
        from insitem.acquisition.h5open import read_superblock, short_by

        sb = read_superblock(path)
        if short_by(path, sb):
            raise RunFileUnreadable(
                f"{path}: the file ends before its last write (a write failed, e.g. on a full disk); "
                "show and analyze read what it holds, but the run cannot be continued in it"
            )
        if open_flags(path) and not force:
            live = _live_writer(path)
            if live:
                raise RunFileError(f"{path}: {live}; refusing to open a second writer (force=True overrides)")
        clear_open_flags(path)
        try:
            h5 = h5py.File(path, "r+", libver="latest", rdcc_nbytes=WRITER_CHUNK_CACHE_BYTES)
        except OSError as exc:
            raise RunFileUnreadable(f"{path}: cannot open the run file for appending: {_short(exc)}") from None
        config = _into_swmr(h5, _read_and_trim)
        rf = cls(h5, config, wall_clock=wall_clock)
        previous = h5.attrs["status"].decode()
        reason = h5.attrs["status_reason"].decode()
        rf._set_status("running", "")
        _modify_fixed_attr(h5, "writer", _writer_id())
        rf._end_open_steps(_last_recorded_time(h5))
        rf.log(t_s, "INFO", f"resumed run file (was {previous}{': ' + reason if reason else ''})")
        rf.flush()
        return rf

    def _end_open_steps(self, t_s: float) -> None:
        """Steps a killed or stopped writer left ``running`` end ``interrupted`` at the last recorded time."""
        rows = self._steps[...]
        for k, row in enumerate(rows):
            if row["status"].rstrip(b"\x00") == b"running":
                row["status"] = b"interrupted"
                if math.isnan(row["t_end_s"]):
                    row["t_end_s"] = t_s
                self._steps[k] = row

    # -- state ------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._status

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def windows(self) -> tuple[WindowSpec, ...]:
        return self.config.windows

    def n_exposures(self, window: str) -> int:
        return self._count[self._window(window).name]

    @property
    def total_dose_e_per_m2(self) -> float:
        """Sum of the dose of every recorded exposure (e/m²; divide by 1e20 for e/Å²)."""
        return self._total_dose

    @property
    def tracking_dose_e_per_m2(self) -> float:
        """Sum of the dose of the recorded drift-tracking frames (e/m²), for `drift.track_max_dose`
        across a resume."""
        return self._tracking_dose

    # -- exposures --------------------------------------------------------------------------------
    def append_exposure(
        self,
        window: str,
        data: np.ndarray,
        *,
        t_start_s: float,
        exposure_s: float,
        potential_V: float = math.nan,
        current_A: float = math.nan,
        cycle: int = -1,
        step: int = -1,
        dose_e_per_m2: float = math.nan,
        energy_offset_eV: float | None = None,
        saturated_px: int = 0,
        partial: bool = False,
        beam_on_s: float | None = None,
        kind: str = "science",
    ) -> int:
        """Write one exposure (rows = position, columns = energy) and flush. Returns its index.

        The image is written and flushed before its record (the commit marker). `partial`: the
        exposure was cut short; `beam_on_s` its true beam-on time (default `exposure_s`), which
        with `dose_e_per_m2` may exceed what `data` holds. `kind`: ``science``, or ``tracking`` for
        a drift-tracking frame (written to the window declared with kind tracking).

        `data` may be uint16 raw counts or float: it is stored as float32 (exact for counts up
        to 2**24, and the processed frames are float32 already). `energy_offset_eV` is the
        drift-tube offset of this exposure (defaults to the window's); the file's energy axis
        keeps the declared calibration, the record keeps the actual one.
        """
        self._check_open()
        spec = self._window(window)
        if kind not in EXPOSURE_KINDS or kind != spec.kind:
            raise RunFileError(f"window {spec.name!r} holds {spec.kind} exposures, not {kind!r}")
        frame = np.asarray(data)
        if frame.shape != (spec.n_rows, spec.n_channels):
            raise RunFileError(
                f"window {spec.name!r}: frame shape {frame.shape} != declared {(spec.n_rows, spec.n_channels)}"
            )
        n = self._count[spec.name]
        ds, taxis = self._data[spec.name], self._taxis[spec.name]
        self._ensure_space(4 * frame.size + 4096)
        with self._writing():
            ds.resize(n + 1, axis=0)
            ds[n] = frame.astype(np.float32, copy=False)
            taxis.resize((n + 1,))
            taxis[n] = t_start_s
            for key, value in (("potential", potential_V), ("current", current_A)):
                if key in self._per_exposure[spec.name]:
                    self._per_exposure[spec.name][key].resize((n + 1,))
                    self._per_exposure[spec.name][key][n] = value
            self._tgroup[spec.name].attrs.modify("size", np.int64(n + 1))
            self._f.flush()  # the image is on disk before its record says it is complete
        total = self._total_dose + (0.0 if math.isnan(dose_e_per_m2) else dose_e_per_m2)
        values = {
            "window": spec.name.encode(),
            "index": n,
            "t_start_s": t_start_s,
            "exposure_s": exposure_s,
            "potential_V": potential_V,
            "current_A": current_A,
            "cycle": cycle,
            "step": step,
            "dose_e_per_m2": dose_e_per_m2,
            "total_dose_e_per_m2": total,
            "energy_offset_eV": spec.energy_offset_eV if energy_offset_eV is None else energy_offset_eV,
            "saturated_px": saturated_px,
            "partial": 1 if partial else 0,
            "beam_on_s": exposure_s if beam_on_s is None else beam_on_s,
            "kind": kind.encode(),
        }
        row = np.zeros(1, dtype=self._exposures.dtype)  # a file from before a column existed lacks it
        for name in row.dtype.names or ():
            row[name] = values[name]
        with self._writing():
            _append_rows(self._exposures, row)
        self._total_dose = total
        if kind == "tracking" and not math.isnan(dose_e_per_m2):
            self._tracking_dose += dose_e_per_m2
        self._count[spec.name] = n + 1
        self.flush()
        return n

    def append_frame(self, window: str, frame: Frame, **record: Any) -> int:
        """`append_exposure` with start time, exposure, energy offset and saturation from a `Frame`."""
        return self.append_exposure(
            window,
            frame.data,
            t_start_s=frame.t_start_s,
            exposure_s=frame.exposure_s,
            energy_offset_eV=frame.settings.energy_offset_eV,
            saturated_px=frame.saturated_px,
            **record,
        )

    # -- electrochemistry -------------------------------------------------------------------------
    def append_electrochemistry(
        self,
        t_s: np.ndarray | Sequence[float] | float,
        voltage_V: np.ndarray | Sequence[float] | float,
        current_A: np.ndarray | Sequence[float] | float,
        *,
        cycle: np.ndarray | Sequence[int] | int = -1,
        step: np.ndarray | Sequence[int] | int = -1,
        compliance: np.ndarray | Sequence[bool] | bool = False,
    ) -> None:
        """Append points of the electrochemical record (arrays of equal length, or scalars).

        Buffered: written in blocks of `ec_block_rows` and flushed every `ec_flush_interval_s`
        of wall time (and with every exposure).
        """
        self._check_open()
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        n = t.shape[0]
        cols = {
            "t_s": t,
            "voltage_V": np.broadcast_to(np.asarray(voltage_V, dtype=np.float64), (n,)),
            "current_A": np.broadcast_to(np.asarray(current_A, dtype=np.float64), (n,)),
            "cycle": np.broadcast_to(np.asarray(cycle, dtype=np.int32), (n,)),
            "step": np.broadcast_to(np.asarray(step, dtype=np.int32), (n,)),
            "compliance": np.broadcast_to(np.asarray(compliance, dtype=np.uint8), (n,)),
        }
        start = 0
        while start < n:
            take = min(n - start, self._ec_buffer.shape[0] - self._ec_fill)
            dst = self._ec_buffer[self._ec_fill : self._ec_fill + take]
            for name, col in cols.items():
                dst[name] = col[start : start + take]
            self._ec_fill += take
            start += take
            if self._ec_fill == self._ec_buffer.shape[0]:
                self._write_ec_buffer()
        if self._wall_clock() - self._last_flush >= self.config.ec_flush_interval_s:
            self.flush()

    def append_readings(self, readings: Iterable[Reading], *, cycle: int = -1, step: int = -1) -> None:
        """Append potentiostat `Reading`s (measured voltage, current, compliance flag)."""
        rs = list(readings)
        if not rs:
            return
        self.append_electrochemistry(
            [r.t_s for r in rs],
            [r.voltage_V for r in rs],
            [r.current_A for r in rs],
            cycle=cycle,
            step=step,
            compliance=[r.compliance_tripped for r in rs],
        )

    # -- events and steps -------------------------------------------------------------------------
    def log(self, t_s: float, level: EventLevel | str, message: str) -> None:
        """Append an event (rig-clock time, level, message cut to `event_message_bytes`); flushed."""
        self._check_open()
        level = level.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise RunFileError(f"event level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        row = np.zeros(1, dtype=self._event_dtype)
        row[0] = (t_s, time.time(), level.encode(), _fixed(message, self._event_dtype["message"].itemsize))
        self._ensure_space(row.nbytes)
        with self._writing():
            _append_rows(self._events, row)
        self._flush_file()

    def append_drift(self, t_s: float, window: str, index: int, measured_m: float, sigma_m: float,
                     image_shift_m: float, action: str, kind: str = "science", dose_e_per_m2: float = math.nan,
                     stage_y_m: float = math.nan) -> None:
        """Append one drift estimate and what was done about it (docs/drift.md; columns in
        DRIFT_DTYPE). Flushed."""
        self._check_open()
        if self._drift is None:
            raise RunFileError("this run file has no drift table (made before drift tracking)")
        values = {"t_s": t_s, "window": _fixed(window, _WINDOW_BYTES), "index": index, "measured_m": measured_m,
                  "sigma_m": sigma_m, "image_shift_m": image_shift_m, "action": _fixed(action, 16),
                  "kind": _fixed(kind, 16), "dose_e_per_m2": dose_e_per_m2, "stage_y_m": stage_y_m}
        row = np.zeros(1, dtype=self._drift.dtype)  # a file from before a column existed lacks it
        for name in row.dtype.names or ():
            row[name] = values[name]
        self._ensure_space(row.nbytes)
        with self._writing():
            _append_rows(self._drift, row)
        self._flush_file()

    def begin_step(self, index: int, name: str, t_s: float) -> None:
        """Record that protocol step `index` started at `t_s` (status ``running``). Flushed."""
        self._check_open()
        row = np.zeros(1, dtype=STEP_DTYPE)
        row[0] = (index, _fixed(name, _STEP_NAME_BYTES), t_s, math.nan, b"running")
        with self._writing():
            if index in self._step_rows:  # a resumed run re-enters an interrupted step
                self._steps[self._step_rows[index]] = row[0]
            else:
                self._step_rows[index] = _append_rows(self._steps, row)
        self.flush()

    def end_step(self, index: int, t_s: float, status: StepStatus = "completed") -> None:
        """Record the end of step `index` and how it ended. Flushed."""
        self._check_open()
        if index not in self._step_rows:
            raise RunFileError(f"end_step({index}) without begin_step")
        if status not in ("running", "completed", "failed", "skipped", "interrupted"):
            raise RunFileError(f"step status {status!r} is not a step status")
        with self._writing():
            row = self._steps[self._step_rows[index]]
            row["t_end_s"] = t_s
            row["status"] = status.encode()
            self._steps[self._step_rows[index]] = row
        self.flush()

    # -- ground truth -----------------------------------------------------------------------------
    def write_ground_truth(
        self,
        t_s: float,
        profiles: Mapping[str, np.ndarray | Sequence[float]] | None = None,
        scalars: Mapping[str, float] | None = None,
    ) -> None:
        """Append one ground-truth sample of a simulated run (missing names are stored as NaN)."""
        self._check_open()
        spec = self.config.ground_truth
        if spec is None or self._gt is None:
            raise RunFileError("this run file was created without a ground_truth declaration")
        profiles = dict(profiles or {})
        scalars = dict(scalars or {})
        unknown = (set(profiles) - set(spec.profiles)) | (set(scalars) - set(spec.scalars))
        if unknown:
            raise RunFileError(f"undeclared ground-truth names: {sorted(unknown)}")
        arrays = {}
        for name in spec.profiles:
            arr = np.full(spec.n_positions, np.nan) if name not in profiles else np.asarray(profiles[name], float)
            if arr.shape != (spec.n_positions,):
                raise RunFileError(f"ground truth {name!r}: shape {arr.shape} != ({spec.n_positions},)")
            arrays[name] = arr
        gt = self._gt
        self._ensure_space(8 * (spec.n_positions * len(arrays) + len(spec.scalars) + 1))
        with self._writing():
            n = gt["t_s"].shape[0]
            # Profiles and scalars first, time last: a reader trims to the shortest.
            for name, arr in arrays.items():
                gt[name].resize(n + 1, axis=0)
                gt[name][n] = arr
            sc = gt["scalars"]
            row = np.zeros(1, dtype=sc.dtype)
            for name in spec.scalars:
                row[name] = scalars.get(name, math.nan)
            _append_rows(sc, row)
            gt["t_s"].resize((n + 1,))
            gt["t_s"][n] = t_s
        self.flush()

    # -- flushing and closing ---------------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered electrochemistry and flush everything to disk (SWMR readers see it)."""
        self._check_open()
        if self._ec_fill:
            self._write_ec_buffer()
        self._flush_file()

    def close(self, status: RunStatus = "completed", reason: str = "") -> None:
        """Flush, stamp the final status (with `reason`) and close. Safe to call twice.

        Whatever fails while flushing, the status is still written and the file closed - unless
        HDF5 failed to write (a full disk): then the file is abandoned as its last flush left it.
        """
        if self._closed:
            return
        if status not in FINAL_STATUSES:
            raise RunFileError(f"close status {status!r} is not one of {FINAL_STATUSES}")
        if self._broken:
            self._abandon()
            return
        errors: list[str] = []
        try:
            if self._ec_fill:
                self._write_ec_buffer()
        except Exception as exc:  # noqa: BLE001 - the status must be written whatever fails
            errors.append(f"electrochemistry not written: {exc}")
        if errors and status == "completed":
            status, reason = "failed", "; ".join(errors)
        elif errors:
            reason = "; ".join([reason, *errors]) if reason else "; ".join(errors)
        if self._broken:  # the buffered electrochemistry could not be written: nothing more can be
            self._abandon()
            return
        try:
            with self._writing():
                self._set_status(status, reason)
                self._f.flush()
        except RunFileError:
            self._abandon()  # the reason is the caller's already (the write that failed before)
        finally:
            if not self._closed:
                self._closed = True
                self._f.close()

    @property
    def broken(self) -> str:
        """Why writing failed ("" while the file is sound)."""
        return self._broken

    def _abandon(self) -> None:
        """Leave the file as its last successful flush left it: no HDF5 call touches it again
        (closing would try to write, fail again, and crash the process at exit)."""
        self._closed = True
        self._status = "abandoned"
        _ABANDONED.append(self.__dict__.copy())  # the h5py objects stay referenced until exit
        for name in list(self.__dict__):
            if name not in ("path", "config", "_closed", "_status", "_broken"):
                del self.__dict__[name]

    def __enter__(self) -> "RunFile":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close("completed")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted", "KeyboardInterrupt")
        else:
            self.close("failed", f"{exc_type.__name__}: {exc}")

    def __del__(self) -> None:
        # Last resort if the caller forgot to close: never leave status "running" on purpose.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close("interrupted", "RunFile garbage-collected without close()")

    # -- internals ----------------------------------------------------------------------------------
    def _window(self, name: str) -> WindowSpec:
        try:
            return self._windows[name]
        except KeyError:
            raise RunFileError(f"unknown window {name!r}; declared: {sorted(self._windows)}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RunFileError(f"{self.path}: run file is closed ({self._status})")

    def _write_ec_buffer(self) -> None:
        self._ensure_space(self._ec_fill * EC_DTYPE.itemsize)
        with self._writing():
            _append_rows(self._ec, self._ec_buffer[: self._ec_fill])
        self._ec_fill = 0

    def _flush_file(self) -> None:
        with self._writing():
            self._f.flush()
        self._last_flush = self._wall_clock()

    def _ensure_space(self, n_bytes: int) -> None:
        """RunFileError("disk full") unless `n_bytes` more, the buffered electrochemistry and the
        closing reserve fit on the file system and under the process's file-size limit."""
        if not SPACE_CHECK:
            return
        # once the disk is full, small records (events, steps, status) may use most of the reserve:
        # they tell what happened, and the file still closes properly
        reserve = DISK_RESERVE_BYTES // 4 if self._disk_full and n_bytes < 65536 else DISK_RESERVE_BYTES
        need = n_bytes + self._ec_fill * EC_DTYPE.itemsize + reserve
        free, where = _room(self.path)
        if free < need:
            self._disk_full = True
            raise RunFileError(
                f"disk full: {free / 1e6:.1f} MB left {where}, the run file needs {need / 1e6:.1f} MB more "
                f"(stopped before writing; {self.path} keeps every exposure written so far)"
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Run HDF5 writes; the first failure marks the file broken (nothing is written after it)."""
        if self._broken:
            raise RunFileError(f"{self.path}: an earlier write failed ({self._broken}); nothing more is written")
        seen = len(_HDF5_WRITE_ERRORS)
        try:
            yield
        except (OSError, RuntimeError) as exc:
            self._broken = _short(exc)
        if len(_HDF5_WRITE_ERRORS) > seen and not self._broken:
            self._broken = _HDF5_WRITE_ERRORS[-1]
        if self._broken:
            raise RunFileError(f"cannot write the run file {self.path}: {self._broken}")

    def _set_status(self, status: str, reason: str) -> None:
        attrs = self._f
        _modify_fixed_attr(attrs, "status", status)
        _modify_fixed_attr(attrs, "status_reason", reason)
        _modify_fixed_attr(attrs, "status_utc", _utc_now())
        self._status = status


# Write failures HDF5 reports while h5py releases an object (printed as "Exception ignored in
# ObjectID.__dealloc__" otherwise), and run files abandoned after a failed write.
_HDF5_WRITE_ERRORS: list[str] = []
_ABANDONED: list[dict[str, Any]] = []
_HOOK_INSTALLED: list[bool] = []


def _short(exc: BaseException) -> str:
    text = str(exc)
    m = text.find("error message = '")
    if m >= 0:  # HDF5's file-driver message: the errno text is the part that matters
        return text[m + 17 :].split("'", 1)[0]
    return " ".join(text.split())[:200]


def _watch_hdf5_write_errors() -> None:
    if _HOOK_INSTALLED:
        return
    _HOOK_INSTALLED.append(True)
    previous = sys.unraisablehook

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, RuntimeError) and "write failed" in str(args.exc_value):
            _HDF5_WRITE_ERRORS.append(_short(args.exc_value))
            return
        previous(args)

    sys.unraisablehook = hook


def abandoned_files() -> list[Path]:
    """Run files abandoned after a failed write in this process. HDF5 cannot close them: a process
    holding one must end with ``os._exit`` (HDF5's exit handlers would crash on them)."""
    return [d["path"] for d in _ABANDONED]


def _exit_without_hdf5_handlers() -> None:
    if _ABANDONED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


atexit.register(_exit_without_hdf5_handlers)


def _room(path: Path) -> tuple[float, str]:
    """Bytes the run file can still grow by (free space, file-size limit) and where the limit is."""
    free = math.inf
    where = ""
    with contextlib.suppress(OSError, AttributeError):
        st = os.statvfs(path.parent if path.parent != Path("") else Path("."))
        free, where = st.f_bavail * st.f_frsize, f"on the file system of {path.parent}"
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            left = soft - path.stat().st_size
            if left < free:
                free, where = left, "under the process's file-size limit (ulimit -f)"
    except (ImportError, OSError):
        pass
    return free, where


def _last_recorded_time(h5: h5py.File) -> float:
    """The latest rig-clock time the file recorded (electrochemistry, events, exposure ends)."""
    root = h5[INSITEM_GROUP]
    times = [math.nan]
    ec = root["electrochemistry"]
    if ec.shape[0]:
        times.append(float(ec[ec.shape[0] - 1]["t_s"]))
    ev = root["events"]
    if ev.shape[0]:
        times.extend(ev["t_s"][...].tolist())
    ex = root["exposures"]
    if ex.shape[0]:
        rec = ex[...]
        times.extend((rec["t_start_s"] + rec["exposure_s"]).tolist())
    finite = [t for t in times if math.isfinite(t)]
    return max(finite) if finite else math.nan


def _append_rows(ds: h5py.Dataset, rows: np.ndarray) -> int:
    """Extend a 1-D table by `rows`; return the index of the first new row."""
    n = ds.shape[0]
    ds.resize((n + rows.shape[0],))
    ds[n:] = rows
    return n


# ---------------------------------------------------------------------------------------------
# Layout


def _lay_out(h5: h5py.File, config: RunFileConfig) -> None:
    start = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    h5.attrs["file_format"] = HYPERSPY_FORMAT
    h5.attrs["file_format_version"] = HYPERSPY_FORMAT_VERSION
    h5.attrs["insitem_layout"] = LAYOUT_NAME
    h5.attrs["insitem_layout_version"] = np.int64(LAYOUT_VERSION)
    h5.attrs["software_version"] = config.software_version or _package_version()
    h5.attrs["created_utc"] = start.isoformat()
    h5.attrs["title"] = config.title
    _set_fixed_attr(h5, "status", "running", _STATUS_BYTES)
    _set_fixed_attr(h5, "status_reason", "", _REASON_BYTES)
    _set_fixed_attr(h5, "status_utc", _utc_now(), _UTC_BYTES)
    _set_fixed_attr(h5, "writer", _writer_id(), _WRITER_BYTES)

    # Creation order tracked so HyperSpy lists the windows in declared order (not by name).
    exps = h5.create_group("Experiments", track_order=True)
    for spec in config.windows:
        _lay_out_window(exps.create_group(spec.name), spec, config, start)

    root = h5.create_group(INSITEM_GROUP)
    root.attrs["config_json"] = config.model_dump_json()
    root.create_dataset("exposures", shape=(0,), maxshape=(None,), chunks=(256,), dtype=EXPOSURE_DTYPE)
    root.create_dataset("electrochemistry", shape=(0,), maxshape=(None,), chunks=(16384,), dtype=EC_DTYPE)
    root.create_dataset(
        "events", shape=(0,), maxshape=(None,), chunks=(64,), dtype=_event_dtype(config.event_message_bytes)
    )
    root.create_dataset("steps", shape=(0,), maxshape=(None,), chunks=(64,), dtype=STEP_DTYPE)
    root.create_dataset("drift", shape=(0,), maxshape=(None,), chunks=(256,), dtype=DRIFT_DTYPE)
    root.create_dataset("protocol", data=config.protocol_text, dtype=h5py.string_dtype("utf-8"))
    inst = root.create_group("instruments")
    for role, ident in config.instruments.items():
        g = inst.create_group(role)
        for key, value in asdict(ident).items():
            g.attrs[key] = value
    gt_spec = config.ground_truth
    if gt_spec is not None:
        gt = root.create_group("ground_truth")
        gt.create_dataset("t_s", shape=(0,), maxshape=(None,), chunks=(256,), dtype="<f8")
        if gt_spec.position_m is not None:
            gt.create_dataset("position_m", data=np.asarray(gt_spec.position_m, dtype="<f8"))
        rows = max(1, min(256, (1 << 18) // (8 * gt_spec.n_positions)))
        for name in gt_spec.profiles:
            gt.create_dataset(
                name,
                shape=(0, gt_spec.n_positions),
                maxshape=(None, gt_spec.n_positions),
                chunks=(rows, gt_spec.n_positions),
                dtype="<f8",
            )
        sc_dtype = np.dtype([(n, "<f8") for n in gt_spec.scalars] or [("_none", "<f8")])
        gt.create_dataset("scalars", shape=(0,), maxshape=(None,), chunks=(256,), dtype=sc_dtype)


#: metadata/Acquisition_instrument/Potentiostat datasets: one value per exposure, along axis-0
PER_EXPOSURE_METADATA = ("potential", "current")
_PER_EXPOSURE_GROUP = "metadata/Acquisition_instrument/Potentiostat"


def _per_exposure_datasets(window: h5py.Group) -> dict[str, h5py.Dataset]:
    group = window.get(_PER_EXPOSURE_GROUP)
    return {} if group is None else {k: group[k] for k in PER_EXPOSURE_METADATA if k in group}


def _lay_out_window(g: h5py.Group, spec: WindowSpec, config: RunFileConfig, start: _dt.datetime) -> None:
    shape = (spec.n_rows, spec.n_channels)
    g.attrs["package"] = ""
    g.attrs["package_version"] = ""
    g.create_dataset(
        "data",
        shape=(0, *shape),
        maxshape=(None, *shape),
        chunks=(1, *shape),  # one exposure per chunk: lazy/Dask readers fetch exposures independently
        dtype=np.float32,
        compression=config.compression,
        fillvalue=np.float32(np.nan),  # an allocated but unwritten frame reads as NaN, never as data
    )
    axes = [
        dict(name="time", units="s", scale=1.0, offset=0.0, size=0, navigate=True, is_binned=False),
        dict(
            name="position",
            units=spec.position_units,
            scale=spec.position_scale,
            offset=spec.position_offset,
            size=spec.n_rows,
            navigate=True,
            is_binned=False,
        ),
        dict(
            name="Energy loss",
            units="eV",
            scale=spec.dispersion_eV_per_channel,
            offset=spec.energy_offset_eV,
            size=spec.n_channels,
            navigate=False,
            is_binned=True,
        ),
    ]
    for i, attrs in enumerate(axes):
        a = g.create_group(f"axis-{i}")
        for key, value in attrs.items():
            a.attrs[key] = np.int64(value) if key == "size" else value
    # Non-uniform time axis: exposure start times on the rig clock (HyperSpy makes a DataAxis).
    g["axis-0"].create_dataset("axis", shape=(0,), maxshape=(None,), chunks=(1024,), dtype="<f8")

    # HyperSpy's metadata conventions: General.date/time (ISO 8601) of the acquisition start,
    # the EELS detector's exposure (s per image), dwell_time (every position of the slit is
    # exposed for the whole image) and frame_number (frames summed per image)
    md = g.create_group("metadata")
    general = md.create_group("General")
    general.attrs["title"] = spec.title or spec.name
    general.attrs["date"] = start.date().isoformat()
    general.attrs["time"] = start.time().isoformat()
    general.attrs["time_zone"] = "UTC"
    sig = md.create_group("Signal")
    sig.attrs["signal_type"] = "EELS"
    instrument = md.create_group("Acquisition_instrument")
    tem = instrument.create_group("TEM")
    tem.attrs["beam_energy"] = config.beam_energy_keV
    tem.attrs["convergence_angle"] = config.convergence_angle_mrad
    eels = tem.create_group("Detector").create_group("EELS")
    eels.attrs["collection_angle"] = config.collection_angle_mrad
    if spec.exposure_s is not None:
        eels.attrs["exposure"] = spec.exposure_s
        eels.attrs["dwell_time"] = spec.exposure_s
    eels.attrs["frame_number"] = np.int64(spec.frames)
    # the potential applied and the current read at each exposure (V, A), index = axis-0 index
    potentiostat = instrument.create_group("Potentiostat")
    for key in PER_EXPOSURE_METADATA:
        potentiostat.create_dataset(key, shape=(0,), maxshape=(None,), chunks=(1024,), dtype="<f8")
    om = g.create_group("original_metadata")
    om.attrs["insitem_window_json"] = spec.model_dump_json()


def _into_swmr(h5: h5py.File, prepare: Callable[[h5py.File], _T]) -> _T:
    """`prepare` the writer's file (everything SWMR cannot create later), flush and switch to
    SWMR mode; the file is closed if any of it fails."""
    try:
        result = prepare(h5)
        h5.flush()
        h5.swmr_mode = True
    except BaseException:
        h5.close()
        raise
    return result


def _read_and_trim(h5: h5py.File) -> RunFileConfig:
    """The configuration of a file reopened for append, trimmed to its committed exposures."""
    config = _read_config(h5)
    _trim_to_committed(h5, config)
    return config


def _read_config(h5: h5py.File) -> RunFileConfig:
    try:
        raw = h5[INSITEM_GROUP].attrs["config_json"]
    except KeyError:
        raise RunFileError(f"{h5.filename}: not an insitem run file (no /{INSITEM_GROUP} config)") from None
    return RunFileConfig.model_validate_json(raw)


def _trim_to_committed(h5: h5py.File, config: RunFileConfig) -> None:
    """Cut every window back to the exposures that have a record (the commit marker), after
    dropping trailing records whose image was never written (NaN, the fill value)."""
    table = h5[f"{INSITEM_GROUP}/exposures"]
    records = table[...]
    keep = len(records)
    while keep:
        name, index = records["window"][keep - 1].decode(), int(records["index"][keep - 1])
        data = h5[f"Experiments/{name}/data"] if name in h5.get("Experiments", {}) else None
        if data is not None and index < data.shape[0] and not np.isnan(data[index]).any():
            break
        keep -= 1
    if keep < len(records):
        table.resize((keep,))
        records = records[:keep]
    for spec in config.windows:
        g = h5[f"Experiments/{spec.name}"]
        recorded = int(np.count_nonzero(records["window"] == spec.name.encode()))
        committed = min(recorded, g["data"].shape[0], g["axis-0/axis"].shape[0])
        if g["data"].shape[0] != committed:
            g["data"].resize(committed, axis=0)
        for ds in (g["axis-0/axis"], *_per_exposure_datasets(g).values()):
            if ds.shape[0] != committed:
                ds.resize((committed,))
        g["axis-0"].attrs.modify("size", np.int64(committed))
    if config.ground_truth is not None:
        gt = h5[f"{INSITEM_GROUP}/ground_truth"]
        n = min(gt["t_s"].shape[0], gt["scalars"].shape[0], *(gt[p].shape[0] for p in config.ground_truth.profiles))
        for name in ("t_s", "scalars", *config.ground_truth.profiles):
            if gt[name].shape[0] != n:
                gt[name].resize(n, axis=0)
