"""`insitem analyze RUN.h5 [--out DIR]`: the analysis of acquisition/analyze_run.py, as
``summary.json`` and PNG figures in DIR (default ``<run>-analysis`` next to the file).

Bad input (missing file, not a run file, no exposures, windows without the edges) ends in one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from insitem.acquisition.analyze_run import AnalyzeInputError, analyze_any, figures_of, headline, summary_of
from insitem.acquisition.drift_report import drift_line
from insitem.acquisition.runfile import RunFileError
from insitem.acquisition.runfile_read import unreadable_as_one_line
from insitem.analysis.axes import AnalysisError
from insitem.cli.console import console, err_console

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def analyze_command(args: argparse.Namespace) -> int:
    run_file: Path = args.run_file
    try:
        if not run_file.is_file():
            raise AnalyzeInputError("no such run file")
        with unreadable_as_one_line(run_file):
            a = analyze_any(run_file)
    except (AnalyzeInputError, RunFileError, AnalysisError, IndexError, KeyError) as exc:
        msg = " ".join(str(exc).split())
        prefix = f"{run_file}: "
        msg = msg[len(prefix):] if msg.startswith(prefix) else msg  # the path is named once
        err_console.print(f"insitem analyze {run_file}: {msg}", soft_wrap=True, highlight=False)
        return EXIT_BAD_INPUT
    out: Path = args.out or run_file.parent / (run_file.stem + "-analysis")
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_of(a, run_file)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figs = figures_of(a, out, run_file.stem)
    console.print(headline(a), soft_wrap=True, highlight=False)
    if (line := drift_line(summary)) is not None:
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"summary.json and {len(figs)} figure{'' if len(figs) == 1 else 's'} in {out}", soft_wrap=True, highlight=False)
    return EXIT_OK
