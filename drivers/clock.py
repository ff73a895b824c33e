"""Clocks: the only source of time for devices, simulators and the runner.

`RealClock` follows the monotonic clock and really sleeps; `VirtualClock` jumps, so a dry run
of an 85-hour protocol takes seconds. Nothing else in insitem calls `time.sleep`/`time.time`
for experiment timing. Times are seconds (float) since the clock's start.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Time source shared by every device of a rig."""

    def now(self) -> float:
        """Seconds since the clock started."""
        ...

    def sleep_until(self, t_s: float) -> None:
        """Return once `now() >= t_s` (immediately if already past)."""
        ...

    def sleep(self, dt_s: float) -> None:
        """Let `dt_s` seconds pass."""
        ...

    @property
    def is_virtual(self) -> bool:
        """True when time jumps instead of passing."""
        ...


class RealClock:
    """Monotonic wall-clock time. `speed` > 1 is not allowed: real instruments run in real time."""

    is_virtual = False

    def __init__(self, t0_s: float = 0.0) -> None:
        """`t0_s`: the time `now()` reads at construction (a resumed run continues its time axis)."""
        self._t0 = time.monotonic() - t0_s
        self._stop = threading.Event()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def sleep_until(self, t_s: float) -> None:
        # Coarse sleep on an Event (interruptible by `interrupt()`), then a short spin for the
        # last millisecond: Linux sleeps overshoot by 0.05-1 ms, which matters for the
        # potentiostat's 5 ms step-timing budget.
        while True:
            remaining = t_s - self.now()
            if remaining <= 0 or self._stop.is_set():
                return
            if remaining > 2e-3:
                self._stop.wait(remaining - 1e-3)
            else:
                while self.now() < t_s:
                    pass
                return

    def sleep(self, dt_s: float) -> None:
        self.sleep_until(self.now() + dt_s)

    def interrupt(self) -> None:
        """Wake every sleeper now (used on emergency stop)."""
        self._stop.set()


class VirtualClock:
    """Simulated time that jumps forward on `sleep_until`. Thread-safe; never goes backwards."""

    is_virtual = True

    def __init__(self, t0_s: float = 0.0) -> None:
        self._t = float(t0_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._t

    def sleep_until(self, t_s: float) -> None:
        with self._lock:
            if t_s > self._t:
                self._t = float(t_s)

    def sleep(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError(f"sleep: dt_s must be >= 0, got {dt_s}")
        with self._lock:
            self._t += float(dt_s)

    def advance(self, dt_s: float) -> None:
        """Alias of `sleep` that reads better in tests."""
        self.sleep(dt_s)


class PacedClock:
    """A virtual timeline paced against wall time (`--realtime`): sim time = speed x wall time.

    Used to run a simulation at wall-clock speed for demonstrations and hardware-in-loop tests.
    """

    is_virtual = False

    def __init__(self, speed: float = 1.0, t0_s: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._real = RealClock(t0_s / speed)

    def now(self) -> float:
        return self._real.now() * self.speed

    def sleep_until(self, t_s: float) -> None:
        self._real.sleep_until(t_s / self.speed)

    def sleep(self, dt_s: float) -> None:
        self.sleep_until(self.now() + dt_s)

    def interrupt(self) -> None:
        self._real.interrupt()
