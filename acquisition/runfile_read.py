"""Reading a run file back: for `insitem show`, `insitem analyze` and `insitem run --resume`.

`RunFileReader` opens the file read-only in SWMR mode, which works on every run file: one still
being written (a live run), one left by a killed writer (whose superblock still says "open for
write", which a non-SWMR open refuses) and a cleanly closed one. Spectrum images are read one
exposure at a time (one HDF5 chunk each) so nothing loads a whole series unless asked.

Consistency: the writer commits an exposure by appending its record after the frame and its
time are written and flushed (see `insitem.acquisition.runfile`), so the reader counts
min(data, time axis, records) exposures per window and never shows a half-written frame; an image
holding NaN (the fill value of a chunk never written, e.g. after a disk filled up) ends the count
too.

Damaged and foreign files: opening goes through `insitem.acquisition.h5open` (checked superblock,
bounded SWMR retries), the layout is checked when the reader opens, and `unreadable_as_one_line`
turns what HDF5 raises later on a damaged block into `RunFileUnreadable` (one line).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import pydantic

from insitem.acquisition.h5open import one_line, open_checked
from insitem.acquisition.runfile import (
    INSITEM_GROUP,
    LAYOUT_NAME,
    RunFileConfig,
    RunFileError,
    RunFileUnreadable,
    WindowSpec,
)
from insitem.drivers.interfaces import InstrumentIdentity


@dataclass(frozen=True)
class Event:
    """One entry of the event log: rig-clock time (s), wall time (Unix s), level, message."""

    t_s: float
    unix_time_s: float
    level: str
    message: str


@dataclass(frozen=True)
class StepRecord:
    """One protocol step as the run recorded it (t_end_s is NaN while running)."""

    index: int
    name: str
    t_start_s: float
    t_end_s: float
    status: str


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    return str(value)


def _columns(table: np.ndarray) -> dict[str, np.ndarray]:
    """A structured array as a dict of plain column arrays (byte strings decoded)."""
    out: dict[str, np.ndarray] = {}
    for name in table.dtype.names or ():
        col = table[name]
        out[name] = col.astype(str) if col.dtype.kind == "S" else np.ascontiguousarray(col)
    return out


class RunFileReader:
    """Read-only view of a run file, live or finished. Use as a context manager.

    Call `refresh()` to see what a live writer appended since opening (or since the last
    refresh); the status is read from the file on every access.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._f, self._short = open_checked(self.path)
        self._file_size = self.path.stat().st_size
        self._complete: dict[str, tuple[int, int]] = {}  # window -> (raw count, complete count)
        try:
            with unreadable_as_one_line(self.path):
                self.config = _check_layout(self.path, self._f)
                self._root = self._f[INSITEM_GROUP]
        except BaseException:
            self._f.close()
            raise

    # -- lifecycle --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up what a live writer has flushed since the last look (SWMR refresh)."""
        self._file_size = self.path.stat().st_size
        for ds in self._datasets():
            ds.refresh()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "RunFileReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- run-level facts --------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """``running`` (live, or a writer that died), ``completed``, ``stopped``, ``failed``, ``interrupted``."""
        return _text(self._f.attrs["status"])

    @property
    def status_reason(self) -> str:
        return _text(self._f.attrs["status_reason"])

    @property
    def title(self) -> str:
        return _text(self._f.attrs.get("title", ""))

    @property
    def software_version(self) -> str:
        return _text(self._f.attrs["software_version"])

    @property
    def protocol_text(self) -> str:
        """The protocol the run was started with; RunFileUnreadable if the file has none (a run
        stopped while its file was being created)."""
        if "protocol" not in self._root:
            raise RunFileUnreadable(
                f"{self.path}: holds no protocol (/{INSITEM_GROUP}/protocol): the run was stopped while its file "
                "was being created; start a new run"
            )
        return _text(self._root["protocol"][()])

    @property
    def instruments(self) -> dict[str, InstrumentIdentity]:
        out = {}
        for role, g in self._root["instruments"].items():
            out[role] = InstrumentIdentity(**{k: _text(v) for k, v in g.attrs.items()})
        return out

    # -- windows and exposures --------------------------------------------------------------------
    @property
    def windows(self) -> list[str]:
        """The science windows (the protocol's): what analysis, figures and exports read. The
        drift-tracking frames, when the run took any, are in `tracking_window`."""
        return [w.name for w in self.config.windows if w.kind == "science"]

    @property
    def tracking_window(self) -> str | None:
        """The window holding the drift-tracking frames (docs/drift.md), or None."""
        return next((w.name for w in self.config.windows if w.kind == "tracking"), None)

    def window_spec(self, window: str) -> WindowSpec:
        for w in self.config.windows:
            if w.name == window:
                return w
        raise RunFileError(f"unknown window {window!r}; the file has {self.windows}")

    def n_exposures(self, window: str) -> int:
        """Completed exposures of `window`: frame, time and record all present, and the image
        written (an image holding NaN, the fill value of an unwritten chunk, ends the count)."""
        self.window_spec(window)
        g = self._f[f"Experiments/{window}"]
        records = self._table("exposures")["window"]
        recorded = int(np.count_nonzero(records == window.encode()))
        n = min(g["data"].shape[0], g["axis-0/axis"].shape[0], recorded)
        raw, done = self._complete.get(window, (-1, 0))
        if raw == n:
            return done
        k = n
        while k > done and not self._image_stored(g["data"], k - 1):
            k -= 1
        self._complete[window] = (n, k)
        return k

    def _image_stored(self, ds: h5py.Dataset, index: int) -> bool:
        """The image's chunk lies inside the file and holds no NaN (the fill value of a chunk
        never written). A writer that died in a failed write can leave a record pointing past
        the end of a short file; SWMR reads such bytes as zeros."""
        with contextlib.suppress(Exception):  # no chunk query (compressed, old HDF5): the NaN check alone
            info = ds.id.get_chunk_info_by_coord((index, 0, 0))
            if info.byte_offset is None or info.byte_offset + info.size > self._file_size:
                return False
        return not np.isnan(ds[index]).any()

    def exposure(self, window: str, index: int) -> np.ndarray:
        """One spectrum image (rows = position, columns = energy), float32; reads one chunk."""
        n = self.n_exposures(window)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window {window!r}: exposure {index} of {n}")
        return self._f[f"Experiments/{window}/data"][index]

    def iter_exposures(self, window: str, start: int = 0) -> Iterator[np.ndarray]:
        """Exposures one at a time (memory: one frame)."""
        for i in range(start, self.n_exposures(window)):
            yield self.exposure(window, i)

    def dataset(self, window: str) -> h5py.Dataset:
        """The raw h5py dataset (exposure, position, energy), for slicing or ``dask.array.from_array``.

        May hold one exposure more than `n_exposures` while the writer is between steps.
        """
        self.window_spec(window)
        return self._f[f"Experiments/{window}/data"]

    def exposure_times_s(self, window: str) -> np.ndarray:
        return self._f[f"Experiments/{window}/axis-0/axis"][: self.n_exposures(window)]

    def energy_axis_eV(self, window: str) -> np.ndarray:
        """Energy loss at each channel centre (declared calibration), eV."""
        w = self.window_spec(window)
        return w.energy_offset_eV + w.dispersion_eV_per_channel * np.arange(w.n_channels)

    def position_axis(self, window: str) -> np.ndarray:
        """Position of each row, in the window's `position_units`."""
        w = self.window_spec(window)
        return w.position_offset + w.position_scale * np.arange(w.n_rows)

    def exposure_records(self, window: str | None = None) -> dict[str, np.ndarray]:
        """Per-exposure records as columns (window, index, t_start_s, exposure_s, potential_V, ...)."""
        table = self._table("exposures")
        if window is not None:
            self.window_spec(window)
            table = table[table["window"] == window.encode()][: self.n_exposures(window)]
        else:
            keep = np.zeros(len(table), bool)
            for w in (spec.name for spec in self.config.windows):  # tracking frames included (column `kind`)
                rows = np.flatnonzero(table["window"] == w.encode())[: self.n_exposures(w)]
                keep[rows] = True
            table = table[keep]
        cols = _columns(table)
        # files written before these columns existed: every exposure complete, beam on = exposure
        if "partial" not in cols:
            cols["partial"] = np.zeros(len(table), bool)
        else:
            cols["partial"] = cols["partial"].astype(bool)
        if "beam_on_s" not in cols:
            cols["beam_on_s"] = np.asarray(cols.get("exposure_s", np.zeros(len(table))), float).copy()
        if "kind" not in cols:
            cols["kind"] = np.full(len(table), "science")
        return cols

    # -- electrochemistry, events, steps ----------------------------------------------------------
    def electrochemistry(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """The electrochemical record: t_s, voltage_V, current_A, cycle, step, compliance (bool)."""
        cols = _columns(self._table("electrochemistry", start, stop))
        cols["compliance"] = cols["compliance"].astype(bool)
        return cols

    @property
    def n_electrochemistry(self) -> int:
        return self._rows("electrochemistry")

    def drift(self) -> dict[str, np.ndarray]:
        """The drift record as columns (t_s, window, index, measured_m, sigma_m, image_shift_m,
        action, kind, dose_e_per_m2, stage_y_m: runfile.DRIFT_DTYPE); empty columns for a run that
        did not track drift or predates the table (files before the last three lack them)."""
        from insitem.acquisition.runfile import DRIFT_DTYPE

        table = self._root["drift"][...] if "drift" in self._root else np.zeros(0, dtype=DRIFT_DTYPE)
        return _columns(table)

    def events(self) -> list[Event]:
        return [
            Event(float(r["t_s"]), float(r["unix_time_s"]), _text(r["level"]), _text(r["message"]))
            for r in self._table("events")
        ]

    def steps(self) -> list[StepRecord]:
        rows = self._table("steps")
        out = [
            StepRecord(int(r["index"]), _text(r["name"]), float(r["t_start_s"]), float(r["t_end_s"]), _text(r["status"]))
            for r in rows
        ]
        return sorted(out, key=lambda s: s.index)

    def last_completed_step(self) -> int | None:
        """Index of the last step of the unbroken run of completed (or skipped) steps from the
        first recorded one; None when none completed. ``--resume`` continues at this + 1."""
        last = None
        for s in self.steps():
            if s.status not in ("completed", "skipped"):
                break
            last = s.index
        return last

    # -- ground truth -----------------------------------------------------------------------------
    def ground_truth(self) -> dict[str, np.ndarray] | None:
        """Ground truth of a simulated run: t_s, each profile (time, position), each scalar; None if absent."""
        spec = self.config.ground_truth
        if spec is None:
            return None
        gt = self._root["ground_truth"]
        n = min(gt["t_s"].shape[0], gt["scalars"].shape[0], *(gt[p].shape[0] for p in spec.profiles))
        out: dict[str, np.ndarray] = {"t_s": gt["t_s"][:n]}
        if "position_m" in gt:
            out["position_m"] = gt["position_m"][...]
        for p in spec.profiles:
            out[p] = gt[p][:n]
        scalars = gt["scalars"][:n]
        for s in spec.scalars:
            out[s] = scalars[s]
        return out

    # -- internals ----------------------------------------------------------------------------------
    def _rows(self, name: str) -> int:
        """Rows of a table; in a file cut short by its writer's failed write, only the rows whose
        chunks lie inside the file (SWMR reads the bytes past the end as zeros)."""
        ds = self._root[name]
        n = int(ds.shape[0])
        if not self._short or n == 0 or ds.chunks is None:
            return n
        per = ds.chunks[0]
        k = (n - 1) // per
        while k >= 0:
            try:
                info = ds.id.get_chunk_info_by_coord((k * per,))
            except Exception:  # noqa: BLE001 - no chunk query: keep what the shape says
                return n
            if info.byte_offset is not None and info.byte_offset + info.size <= self._file_size:
                break
            n = k * per
            k -= 1
        return n

    def _table(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        n = self._rows(name)
        stop = n if stop is None else min(stop, n)
        return self._root[name][start:stop]

    def _datasets(self) -> Iterator[h5py.Dataset]:
        for w in self.config.windows:
            yield self._f[f"Experiments/{w.name}/data"]
            yield self._f[f"Experiments/{w.name}/axis-0/axis"]
        for name in ("exposures", "electrochemistry", "events", "steps", "drift"):
            if name in self._root:
                yield self._root[name]
        if self.config.ground_truth is not None:
            gt = self._root["ground_truth"]
            for name in ("t_s", "scalars", *self.config.ground_truth.profiles):
                yield gt[name]


_REQUIRED_TABLES = ("exposures", "electrochemistry", "events", "steps")


def _check_layout(path: Path, f: h5py.File) -> RunFileConfig:
    """The file's declaration, after checking that it is an insitem run file laid out completely."""
    layout = f.attrs.get("insitem_layout")
    if layout is None or _text(layout) != LAYOUT_NAME:
        kind = "an HDF5 file" if "Experiments" not in f else "a HyperSpy file"
        raise RunFileUnreadable(f"{path}: {kind}, but not an insitem run file (no insitem_layout attribute)")
    if INSITEM_GROUP not in f or "config_json" not in f[INSITEM_GROUP].attrs:
        raise RunFileUnreadable(
            f"{path}: incomplete run file (no /{INSITEM_GROUP} declaration): the run was stopped while its file was "
            "being created; start a new run"
        )
    try:
        config = RunFileConfig.model_validate_json(f[INSITEM_GROUP].attrs["config_json"])
    except pydantic.ValidationError as exc:
        raise RunFileUnreadable(f"{path}: damaged run file: its declaration does not validate ({exc.error_count()} errors)") from None
    root = f[INSITEM_GROUP]
    missing = [f"/{INSITEM_GROUP}/{t}" for t in _REQUIRED_TABLES if t not in root]
    for w in config.windows:
        for part in ("data", "axis-0/axis"):
            if f"Experiments/{w.name}/{part}" not in f:
                missing.append(f"/Experiments/{w.name}/{part}")
    if "status" not in f.attrs:
        missing.append("the status attribute")
    if missing:
        raise RunFileUnreadable(
            f"{path}: incomplete run file (missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}): "
            "the run was stopped while its file was being created; start a new run"
        )
    for w in config.windows:
        shape = f[f"Experiments/{w.name}/data"].shape
        if len(shape) != 3 or shape[1:] != (w.n_rows, w.n_channels):
            raise RunFileUnreadable(f"{path}: damaged run file: window {w.name!r} data shape {shape} does not match its declaration")
    return config


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def unreadable_as_one_line(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn what HDF5/h5py raise on a damaged block into `RunFileUnreadable` (one line)."""
    try:
        yield
    except RunFileError:
        raise
    except OSError as exc:
        if exc.errno in _OUTPUT_ERRNOS:  # writing the command's output (figures), not reading the file
            raise
        raise RunFileUnreadable(f"{path}: damaged run file: {one_line(exc) or type(exc).__name__}") from None
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise RunFileUnreadable(f"{path}: damaged run file: {one_line(exc) or type(exc).__name__}") from None


def open_run(path: str | os.PathLike[str]) -> RunFileReader:
    """Open a run file for reading (live or finished)."""
    return RunFileReader(path)
