"""`insitem show RUN.h5 [--out DIR] [--follow]`: the figures of acquisition/figures.py in DIR
(default ``<run>-figures`` next to the file); `--follow` redraws while the run is live."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from insitem.acquisition.figures import write_figures
from insitem.acquisition.runfile_read import RunFileReader, unreadable_as_one_line
from insitem.drivers.errors import InsitemError


class FigureFolderError(InsitemError):
    """The folder for the figures cannot be made or written (bad --out: exit 2)."""

    bad_input = True


def show_command(args: argparse.Namespace) -> int:
    """Figures of a run file; a missing, damaged or foreign file is one line and exit 2 (raised as
    `RunFileUnreadable`, reported by the CLI)."""
    run_file: Path = args.run_file
    out = args.out or run_file.parent / (run_file.stem + "-figures")
    with unreadable_as_one_line(run_file):
        RunFileReader(run_file).close()  # checks the file before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise FigureFolderError(f"cannot write figures to {out}: {exc.strerror or exc}; give --out DIR") from None
    while True:
        try:
            with unreadable_as_one_line(run_file):
                figs = write_figures(run_file, out)
        except OSError as exc:
            raise FigureFolderError(f"cannot write figures to {out}: {exc.strerror or exc}; give --out DIR") from None
        print(f"{len(figs)} figure{'' if len(figs) == 1 else 's'} in {out}")
        if not args.follow:
            return 0
        with unreadable_as_one_line(run_file), RunFileReader(run_file) as r:
            if r.status != "running":
                return 0
        time.sleep(args.interval)
