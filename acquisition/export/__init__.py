"""Run data in the formats of the battery and microscopy communities.

- `bdf`: the electrochemical record as a Battery Data Format CSV (Battery Data Alliance), the
  table cyclers export and cellpy/batterydf read.
- `nexus`: the spectrum images with their exposures and the electrochemical record as a NeXus
  file following the NXem application definition (NXem_event_data, NXspectrum), the layout NOMAD
  and other electron-microscopy archives ingest.

Both read a run file through `insitem.acquisition.runfile_read` and write a new file; the run
file is never modified.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from insitem.acquisition.export.bdf import BDF_COLUMNS, export_bdf
from insitem.acquisition.export.nexus import export_nexus
from insitem.acquisition.runfile import RunFileError
from insitem.drivers.errors import InsitemError, UsageError

SUFFIXES = {"bdf": ".bdf.csv", "nexus": ".nxs"}


class ExportError(UsageError):
    """The export cannot be made as asked (bad option, unreadable run file, unwritable target)."""


def export_run(
    run_path: str | os.PathLike[str],
    fmt: str,
    out_path: str | os.PathLike[str] | None = None,
    preparation_date: str | None = None,
) -> Path:
    """Export `run_path` as `fmt` ("bdf" or "nexus") to `out_path` (default: beside the run file)."""
    run = Path(run_path)
    if fmt not in SUFFIXES:
        raise ExportError(f"--to {fmt!r}: choose one of {', '.join(SUFFIXES)}")
    if preparation_date is not None:
        try:
            stamp = _dt.datetime.fromisoformat(preparation_date)
        except ValueError:
            raise ExportError(f"--prepared {preparation_date[:40]!r}: give an ISO 8601 date, e.g. 2026-12-01T14:00+01:00") from None
        if stamp.tzinfo is None:
            raise ExportError(f"--prepared {preparation_date[:40]!r}: add the time and UTC offset, e.g. {stamp.date()}T14:00+01:00")
    if not run.is_file():
        raise ExportError(f"{run}: no such run file")
    out = Path(out_path) if out_path is not None else run.with_name(run.stem + SUFFIXES[fmt])
    try:
        if fmt == "bdf":
            return export_bdf(run, out)
        return export_nexus(run, out, preparation_date=preparation_date)
    except RunFileError as exc:
        raise ExportError(str(exc)) from None
    except (OSError, KeyError, ValueError) as exc:
        raise ExportError(f"{run}: cannot export ({type(exc).__name__}: {str(exc)[:200]})") from None
    finally:
        out.with_name(out.name + ".part").unlink(missing_ok=True)  # never leave a half-written export


__all__ = ["BDF_COLUMNS", "SUFFIXES", "ExportError", "export_bdf", "export_nexus", "export_run"]
