"""Fault-matrix fixtures and the report.

Each cell test records its outcome with the `record_cell` fixture; after the session the table
(fault x moment) is printed in pytest's terminal summary, and written to the file named by the
environment variable INSITEM_FAULT_REPORT when it is set. docs/reliability.md quotes it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fault_matrix, faultkit (the tests are not a package)

from fault_matrix import CELLS, render  # noqa: E402

_RESULTS: dict[str, dict[str, str]] = {}


@pytest.fixture
def record_cell() -> Callable[[str, str, str], None]:
    def record(cell_id: str, outcome: str, data: str) -> None:
        _RESULTS[cell_id] = {"outcome": outcome, "data": data}

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    runnable = [c for c in CELLS if c.expect != "n/a"]
    table = render(_RESULTS)
    summary = f"{len(_RESULTS)} of {len(runnable)} cells run ({len(CELLS) - len(runnable)} n/a)"
    terminalreporter.write_sep("=", "fault matrix")
    terminalreporter.write_line(summary)
    terminalreporter.write_line(table)
    path = os.environ.get("INSITEM_FAULT_REPORT")
    if path:
        Path(path).write_text(summary + "\n\n" + table + "\n", encoding="utf-8")
