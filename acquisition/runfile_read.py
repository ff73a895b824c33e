"""Reading a run file back: for `insitem show`, `insitem analyze` and `insitem run --resume`.

`RunFileReader` opens the file read-only in SWMR mode, which works on every run file: one still
being written (a live run), one left by a killed writer (whose superblock still says "open for
write", which a non-SWMR open refuses) and a cleanly closed one. Spectrum images are read one
exposure at a time (one HDF5 chunk each) so nothing loads a whole series unless asked.

Consistency: the writer commits an exposure by appending its record after the frame and its
time (see `insitem.acquisition.runfile`), so the reader counts min(data, time axis, records)
exposures per window and never shows a half-written frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from insitem.acquisition.runfile import (
    INSITEM_GROUP,
    RunFileConfig,
    RunFileError,
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
        try:
            self._f = h5py.File(self.path, "r", swmr=True)
        except OSError as exc:
            raise RunFileError(f"{self.path}: cannot open as a run file: {exc}") from exc
        try:
            self.config = RunFileConfig.model_validate_json(self._f[INSITEM_GROUP].attrs["config_json"])
        except KeyError:
            self._f.close()
            raise RunFileError(f"{self.path}: not an insitem run file (no /{INSITEM_GROUP} config)") from None
        self._root = self._f[INSITEM_GROUP]

    # -- lifecycle --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up what a live writer has flushed since the last look (SWMR refresh)."""
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
        return [w.name for w in self.config.windows]

    def window_spec(self, window: str) -> WindowSpec:
        for w in self.config.windows:
            if w.name == window:
                return w
        raise RunFileError(f"unknown window {window!r}; the file has {self.windows}")

    def n_exposures(self, window: str) -> int:
        """Completed exposures of `window` (frame, time and record all present)."""
        self.window_spec(window)
        g = self._f[f"Experiments/{window}"]
        records = self._root["exposures"]["window"]
        recorded = int(np.count_nonzero(records == window.encode()))
        return min(g["data"].shape[0], g["axis-0/axis"].shape[0], recorded)

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
        table = self._root["exposures"][...]
        if window is not None:
            self.window_spec(window)
            table = table[table["window"] == window.encode()]
        return _columns(table)

    # -- electrochemistry, events, steps ----------------------------------------------------------
    def electrochemistry(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """The electrochemical record: t_s, voltage_V, current_A, cycle, step, compliance (bool)."""
        cols = _columns(self._root["electrochemistry"][start:stop])
        cols["compliance"] = cols["compliance"].astype(bool)
        return cols

    @property
    def n_electrochemistry(self) -> int:
        return int(self._root["electrochemistry"].shape[0])

    def events(self) -> list[Event]:
        return [
            Event(float(r["t_s"]), float(r["unix_time_s"]), _text(r["level"]), _text(r["message"]))
            for r in self._root["events"][...]
        ]

    def steps(self) -> list[StepRecord]:
        rows = self._root["steps"][...]
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
    def _datasets(self) -> Iterator[h5py.Dataset]:
        for w in self.config.windows:
            yield self._f[f"Experiments/{w.name}/data"]
            yield self._f[f"Experiments/{w.name}/axis-0/axis"]
        for name in ("exposures", "electrochemistry", "events", "steps"):
            yield self._root[name]
        if self.config.ground_truth is not None:
            gt = self._root["ground_truth"]
            for name in ("t_s", "scalars", *self.config.ground_truth.profiles):
                yield gt[name]


def open_run(path: str | os.PathLike[str]) -> RunFileReader:
    """Open a run file for reading (live or finished)."""
    return RunFileReader(path)
