"""Live progress of a run: a rich panel (step, cycle k/N, potential, current, next exposure,
elapsed and remaining time, wall-clock time left, simulated-time speed-up, live Li profile) and
log lines.

Without a terminal (nohup, a tmux log, a pipe) or with --no-progress there is no panel: events are
printed as lines, and a status line (step, potential, current, images done/total, dose used,
wall-clock time left) every `status_interval_s` of wall time, from a thread, so a long hold or
rest with nothing else to report still shows the run is alive.

Redraws are throttled to a few per wall-clock second, so a dry run that makes 10^5 readings
per second is not slowed by its display.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from insitem.protocols.plan import Plan, PlannedExposure, PlannedStep
from insitem.protocols.units import E_PER_A2

#: default wall-clock seconds between status lines when there is no live panel
STATUS_INTERVAL_S = 60.0

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
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        """`status_interval_s`: wall seconds between status lines without a panel (0: none)."""
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
        self.dose_e_per_m2 = 0.0
        self._dose_rate = plan.protocol.beam.dose_rate_e_per_m2_s
        self.status_interval_s = status_interval_s
        self._stop_status = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._rate_mark: tuple[float, float] | None = None  # (wall, plan time) when the first step started

    # -- context --------------------------------------------------------------------------------
    def __enter__(self) -> "LiveProgress":
        if self.enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        elif self.status_interval_s > 0:
            self._status_thread = threading.Thread(target=self._status_loop, name="insitem-status", daemon=True)
            self._status_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_status.set()
        if self._status_thread is not None:
            self._status_thread.join(5.0)
            self._status_thread = None
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None

    # -- Progress protocol --------------------------------------------------------------------------
    def step_started(self, step: PlannedStep, t_s: float) -> None:
        self.step = step
        if self._sim0 is None:
            self._sim0 = t_s - step.t_start_s
            self._rate_mark = (time.monotonic(), step.t_start_s)
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
        self.dose_e_per_m2 += exposure.exposure_s * self._dose_rate
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

    def wall_time_left_s(self) -> float:
        """Wall-clock seconds to the plan's end at the pace measured since the first step (NaN
        until a few seconds of the run have been measured)."""
        if self._rate_mark is None:
            return math.nan
        wall0, plan0 = self._rate_mark
        wall = time.monotonic() - wall0
        done = self._plan_time() - plan0
        if wall < 1.0 or done <= 0:
            return math.nan
        return max(0.0, self.plan.duration_s - self._plan_time()) * wall / done

    def status_line(self) -> str:
        """One line of where the run is (printed every `status_interval_s` without a panel)."""
        t = self._plan_time()
        st = self.step
        if st is not None:
            cyc = f", cycle {self.cycle}/{st.cycles}" if st.cycles else ""
            where = f"step {st.index + 1}/{len(self.plan.steps)} {st.kind}{cyc}"
        else:
            where = "setting up"
        pot = f"{self.voltage_V:.4f} V" if math.isfinite(self.voltage_V) else "output off"
        cur = f"{self.current_A:.3e} A" if math.isfinite(self.current_A) else "- A"
        return (
            f"{_fmt_time(t)} STATUS  {where} | {pot}, {cur} | images {self.exposures_done}/{len(self.plan.images)} | "
            f"dose {self.dose_e_per_m2 / E_PER_A2:.4g} of {self.plan.dose_e_per_m2 / E_PER_A2:.4g} e/Å² | "
            f"wall-clock left {_fmt_time(self.wall_time_left_s())} (plan {_fmt_time(t)} of {_fmt_time(self.plan.duration_s)})"
        )

    def _status_loop(self) -> None:
        while not self._stop_status.wait(self.status_interval_s):
            try:
                self.console.print(self.status_line(), soft_wrap=True, highlight=False, markup=False)
            except Exception:  # noqa: BLE001 - a display must never stop the run
                return

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
        table.add_row("wall-clock left", _fmt_time(self.wall_time_left_s()))
        table.add_row("dose", f"{self.dose_e_per_m2 / E_PER_A2:.4g} of {self.plan.dose_e_per_m2 / E_PER_A2:.4g} e/Å²")
        if wall > 0.5:
            table.add_row("speed", f"{t / wall:,.0f}x real time")
        parts: list[object] = [table]
        if self.profile is not None:
            parts.append(Text(f"Li profile (Pt at left): {sparkline(self.profile)}"))
        for m in self.messages:
            parts.append(Text(m, style="yellow"))
        return Group(*parts)
