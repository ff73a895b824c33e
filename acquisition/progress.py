"""Live progress of a run: a rich panel (step, cycle k/N, potential, current, next exposure,
elapsed and remaining time, simulated-time speed-up, live Li profile) and log lines.

Redraws are throttled to a few per wall-clock second, so a dry run that makes 10^5 readings
per second is not slowed by its display.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from insitem.protocols.plan import Plan, PlannedExposure, PlannedStep

SPARK = " ▁▂▃▄▅▆▇█"


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    s = max(0.0, s)
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{sec:02d}"


def sparkline(values: np.ndarray, width: int = 60) -> str:
    v = np.asarray(values, float)
    if v.size == 0 or not np.isfinite(v).any():
        return ""
    idx = np.linspace(0, v.size - 1, min(width, v.size)).astype(int)
    v = v[idx]
    lo, hi = np.nanmin(v), np.nanmax(v)
    scale = (hi - lo) or 1.0
    return "".join(SPARK[int(round((x - lo) / scale * (len(SPARK) - 1)))] if np.isfinite(x) else " " for x in v)


class LiveProgress:
    """Implements the runner's Progress protocol with a rich Live panel."""

    def __init__(
        self,
        plan: Plan,
        clock_now: Callable[[], float],
        console: Console | None = None,
        live_profile: Callable[[str, np.ndarray], np.ndarray | None] | None = None,
        enabled: bool = True,
    ) -> None:
        self.plan = plan
        self.now = clock_now
        self.console = console or Console(stderr=True)
        self.live_profile = live_profile
        self.enabled = enabled and self.console.is_terminal
        self._live: Live | None = None
        self._wall0 = time.monotonic()
        self._sim0: float | None = None
        self._last_draw = 0.0
        self.step: PlannedStep | None = None
        self.cycle = 0
        self.voltage_V = math.nan
        self.current_A = math.nan
        self.exposures_done = 0
        self.exposing: PlannedExposure | None = None
        self.profile: np.ndarray | None = None
        self.messages: list[str] = []

    # -- context --------------------------------------------------------------------------------
    def __enter__(self) -> "LiveProgress":
        if self.enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None

    # -- Progress protocol --------------------------------------------------------------------------
    def step_started(self, step: PlannedStep, t_s: float) -> None:
        self.step = step
        if self._sim0 is None:
            self._sim0 = t_s - step.t_start_s
        self._draw(force=True)

    def readings(self, t_s: np.ndarray, voltage_V: np.ndarray, current_A: np.ndarray, cycle: int, step: int) -> None:
        self.voltage_V = float(voltage_V[-1])
        self.current_A = float(current_A[-1])
        self.cycle = cycle
        self._draw()

    def exposure_started(self, exposure: PlannedExposure, t_s: float) -> None:
        self.exposing = exposure
        self._draw()

    def exposure_done(self, exposure: PlannedExposure, data: np.ndarray, t_s: float) -> None:
        # on a real-time run this comes from the I/O thread, possibly after the next exposure started
        if self.exposing is exposure:
            self.exposing = None
        if exposure.subframe != exposure.n_subframes - 1:
            return
        self.exposures_done += 1
        if self.live_profile is not None:
            prof = self.live_profile(exposure.window, data)
            if prof is not None:
                self.profile = prof
        self._draw(force=True)

    def event(self, level: str, message: str) -> None:
        line = f"{_fmt_time(self._plan_time())} {level:<7} {message}"
        if level in ("WARNING", "ERROR", "CRITICAL") or not self.enabled:
            self.messages = (self.messages + [line])[-5:]
        if not self.enabled:
            self.console.print(line, soft_wrap=True, highlight=False)
        self._draw(force=True)

    # -- rendering ------------------------------------------------------------------------------------
    def _plan_time(self) -> float:
        return self.now() - (self._sim0 or 0.0)

    def _draw(self, force: bool = False) -> None:
        if self._live is None:
            return
        wall = time.monotonic()
        if not force and wall - self._last_draw < 0.25:
            return
        self._last_draw = wall
        self._live.update(self._render())

    def _render(self) -> Group:
        t = self._plan_time()
        total = self.plan.duration_s
        wall = time.monotonic() - self._wall0
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        st = self.step
        n_steps = len(self.plan.steps)
        if st is not None:
            cyc = f", cycle {self.cycle}/{st.cycles}" if st.cycles else ""
            table.add_row("step", f"{st.index + 1}/{n_steps} {st.kind}{cyc}")
        table.add_row("potential", f"{self.voltage_V:.4f} V" if math.isfinite(self.voltage_V) else "output off")
        table.add_row("current", f"{self.current_A:.4e} A" if math.isfinite(self.current_A) else "-")
        nxt = next((e for e in self.plan.images if e.t_start_s >= t), None)
        if self.exposing is not None:
            table.add_row("exposure", f"exposing {self.exposing.window} ({self.exposing.exposure_s:g} s)")
        elif nxt is not None:
            table.add_row("next exposure", f"{nxt.window} in {_fmt_time(nxt.t_start_s - t)}")
        table.add_row("spectrum images", f"{self.exposures_done}/{len(self.plan.images)}")
        table.add_row("elapsed", f"{_fmt_time(t)} of {_fmt_time(total)} (remaining {_fmt_time(total - t)})")
        if wall > 0.5:
            table.add_row("speed", f"{t / wall:,.0f}x real time")
        parts: list[object] = [table]
        if self.profile is not None:
            parts.append(Text(f"Li profile (Pt at left): {sparkline(self.profile)}"))
        for m in self.messages:
            parts.append(Text(m, style="yellow"))
        return Group(*parts)
