"""Galvanostatic stepping for cell models that are solved in voltage mode (simulators/silicon.py,
simulators/lamella.py): the terminal voltage that makes the step's current equal the sourced one,
found by bisection on trial copies of the cell, then committed.

Same contract as `Cell.advance_current`: `voltage_limit_V` bounds the voltage on the side the
current drives it; at the limit the cell takes what current it draws there and the step reports
`compliance_tripped`. Slow (a few dozen trial steps per step) but exact, and used only by protocols
that source current on these presets.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq

SEARCH_SPAN_V = 10.0


def advance_current(cell: Any, current_A: float, dt_s: float, voltage_limit_V: float | None = None,
                    beam_current_A: float = 0.0) -> Any:
    from insitem.simulators.electrochemistry import CellStep

    state = cell.state_dict()

    def excess(V: float) -> float:
        trial = type(cell).from_state_dict(state)
        return trial.advance(dt_s, V, 1.0, beam_current_A).current_A - current_A

    v0 = float(cell.V_term_V)
    lo, hi = v0 - SEARCH_SPAN_V, v0 + SEARCH_SPAN_V
    limited = False
    if voltage_limit_V is not None:
        if current_A >= 0:
            hi = min(hi, voltage_limit_V)
            limited = excess(hi) < 0
        else:
            lo = max(lo, voltage_limit_V)
            limited = excess(lo) > 0
    if limited:
        V = hi if current_A >= 0 else lo
    else:
        V = brentq(excess, lo, hi, xtol=1e-9, maxiter=200)
    step = cell.advance(dt_s, V, 1.0, beam_current_A)
    cell.last_tripped = limited  # at the voltage limit: the source's compliance flag, as `Cell`'s
    return CellStep(step.current_A, step.terminal_V, limited, step.charge_C)


class CurrentControlled:
    """What a voltage-mode cell model (keeping its last current in `i_cell_A` and its clock in
    `time_s`, stepped by `advance`) offers as `Cell` does: the last measured current, the
    galvanostatic step above and the staircase sweep, one `advance` per stair."""

    i_cell_A: float
    time_s: float

    @property
    def last_current_A(self) -> float:
        """Measured current of the last step (the SMU's reading), as `Cell.last_current_A`."""
        return self.i_cell_A

    def advance_current(self, current_A: float, dt_s: float, voltage_limit_V: float | None = None,
                        beam_current_A: float = 0.0) -> Any:
        """Galvanostatic step (`advance_current` above)."""
        return advance_current(self, current_A, dt_s, voltage_limit_V, beam_current_A)

    def advance_sweep(self, t_points_s: np.ndarray, applied_V_points: np.ndarray, compliance_A: float,
                      beam_current_A: float | np.ndarray = 0.0) -> dict[str, np.ndarray]:
        """Step through a staircase (`Cell.advance_sweep`'s contract): stair k holds
        `applied_V_points[k + 1]` from `t_points_s[k]` to `t_points_s[k + 1]`."""
        t = np.asarray(t_points_s, dtype=float)
        v = np.asarray(applied_V_points, dtype=float)
        beam = np.broadcast_to(np.asarray(beam_current_A, dtype=float), t.shape)
        n = len(t) - 1
        cur, vt, times = np.empty(n), np.empty(n), np.empty(n)
        trip = np.zeros(n, dtype=bool)
        for k in range(n):
            step = self.advance(float(t[k + 1] - t[k]), float(v[k + 1]), compliance_A, float(beam[k + 1]))  # type: ignore[attr-defined]
            cur[k], vt[k], trip[k], times[k] = step.current_A, step.terminal_V, step.compliance_tripped, self.time_s
        return {"time_s": times, "current_A": cur, "terminal_V": vt, "compliance_tripped": trip,
                "charge_C": cur * np.diff(t)}


def couple_source(world: Any, smu: Any) -> None:
    """Copy an emulated SourceMeter's source state (simulators/emulators/smu.py `SmuModel`) into
    the world: a current source (output on, source function CURR) holds the world's cell at the
    programmed current with the voltage limit on the side the current drives towards, as
    `SimWorld.hold_current`; otherwise the applied voltage (None: output off) and compliance.
    The SMU model advanced the world to now before its state changed, so nothing is stepped here."""
    if smu.output_on and smu.source_function == "CURR":
        world.applied_V = None
        world.applied_A = float(smu.source_I)
        world.voltage_limit_V = math.copysign(float(smu.voltage_limit_V), float(smu.source_I))
    else:
        world.applied_V = smu._applied_V()
    world.compliance_A = smu._effective_compliance()
