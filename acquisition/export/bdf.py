"""The electrochemical record as a Battery Data Format (BDF) CSV.

BDF (Battery Data Alliance, https://github.com/battery-data-alliance/battery-data-format) names
each column `Quantity / unit`; `Test Time / s`, `Voltage / V` and `Current / A` are required,
the rest recommended or optional. insitem writes:

| BDF column              | from the run file                                                   |
|-------------------------|---------------------------------------------------------------------|
| Test Time / s           | electrochemistry `t_s` (rig clock, s since the run's time origin)   |
| Voltage / V             | `voltage_V` (working vs counter electrode, as the SourceMeter sees) |
| Current / A             | `current_A` (positive = charge: Li driven into the Pt-side electrode) |
| Unix Time / s           | `t_s` placed on the wall clock (see `timebase`)                     |
| Cycle Count / 1         | `cycle`: the CV or galvanostatic cycle within its step, 1-based; 0 outside cycling |
| Step Count / 1          | running count of step changes, 1-based (increments each time the step changes) |
| Step Index / 1          | `step`: the protocol step's index, 0-based as in the protocol file  |
| Cumulative Capacity / Ah | running integral of |I| dt (trapezoid rule)                       |
| Net Capacity / Ah       | running integral of I dt                                            |

Rows are in time order; a resumed run's gap stays a gap (no rows are invented). The CSV is
written with the standard library: the format is a plain header line and numbers, and keeping
pandas out of the run path keeps the package light (batterydf checks it in the tests).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from insitem.acquisition.export.timebase import unix_origin_s
from insitem.acquisition.runfile_read import open_run

BDF_COLUMNS: tuple[str, ...] = (
    "Test Time / s",
    "Voltage / V",
    "Current / A",
    "Unix Time / s",
    "Cycle Count / 1",
    "Step Count / 1",
    "Step Index / 1",
    "Cumulative Capacity / Ah",
    "Net Capacity / Ah",
)

_SECONDS_PER_HOUR = 3600.0
_BLOCK_ROWS = 65536


def _step_counts(step: np.ndarray, previous_step: int | None, count: int) -> tuple[np.ndarray, int | None, int]:
    """Running step count: +1 at every change of the step index (continued across blocks)."""
    changes = np.ones(step.shape, dtype=np.int64)
    changes[1:] = step[1:] != step[:-1]
    if previous_step is not None and step.size and int(step[0]) == previous_step:
        changes[0] = 0
    counts = count + np.cumsum(changes)
    last = int(step[-1]) if step.size else previous_step
    return counts, last, int(counts[-1]) if counts.size else count


def export_bdf(run_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the run's electrochemical record to `out_path` as BDF CSV; returns the path."""
    out = Path(out_path)
    with open_run(run_path) as reader:
        origin = unix_origin_s(reader)
        n = reader.n_electrochemistry
        tmp = out.with_name(out.name + ".part")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(BDF_COLUMNS)
            prev_t: float | None = None
            prev_i = 0.0
            q_abs = q_net = 0.0
            prev_step: int | None = None
            count = 0
            for start in range(0, n, _BLOCK_ROWS):
                ec = reader.electrochemistry(start, min(n, start + _BLOCK_ROWS))
                t, v, i = ec["t_s"], ec["voltage_V"], ec["current_A"]
                # capacities: trapezoids between consecutive rows, carried across blocks
                t_prev = np.concatenate(([t[0] if prev_t is None else prev_t], t[:-1]))
                i_prev = np.concatenate(([i[0] if prev_t is None else prev_i], i[:-1]))
                dt = np.where(np.isfinite(t - t_prev), t - t_prev, 0.0)
                mean_i = np.where(np.isfinite(i + i_prev), 0.5 * (i + i_prev), 0.0)
                net = q_net + np.cumsum(mean_i * dt) / _SECONDS_PER_HOUR
                absolute = q_abs + np.cumsum(np.abs(mean_i) * dt) / _SECONDS_PER_HOUR
                counts, prev_step, count = _step_counts(ec["step"], prev_step, count)
                for k in range(t.size):
                    w.writerow((
                        repr(float(t[k])), repr(float(v[k])), repr(float(i[k])), repr(origin + float(t[k])),
                        int(ec["cycle"][k]), int(counts[k]), int(ec["step"][k]),
                        repr(float(absolute[k])), repr(float(net[k])),
                    ))
                if t.size:
                    prev_t, prev_i = float(t[-1]), float(i[-1])
                    q_net, q_abs = float(net[-1]), float(absolute[-1])
        os.replace(tmp, out)
    return out
