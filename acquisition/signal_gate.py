"""Hold the stop signals from the moment `insitem` starts until a run can act on them.

A Ctrl-C (SIGINT), SIGTERM, a closed terminal (SIGHUP) or a Ctrl-Z (SIGTSTP) can come at any
moment: during the imports, while the safety supervisor starts, while the run file is created.
Python's default reactions (a KeyboardInterrupt in the middle of an import or of an HDF5 file
creation, death by SIGHUP, a pause with the beam on) leave a traceback, a half-written file or
instruments nobody watches. `GATE.hold()` replaces them by a handler that only records the signal;
`insitem run` asks `GATE.pending()` at points where stopping is clean, and hands the signals to the
runner's own handlers once it runs. Every other command gets Python's defaults back
(`GATE.release()`), with any held signal delivered again.

This module imports nothing heavy: the CLI holds the gate before its own imports.
"""

from __future__ import annotations

import signal
import types
from typing import Any

#: the signals held, where the platform has them (SIGHUP and SIGTSTP are POSIX-only)
HELD = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGTSTP")) if s is not None)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SignalGate:
    """Records stop signals instead of acting on them, until released."""

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}
        self._pending: list[int] = []

    @property
    def holding(self) -> bool:
        return bool(self._old)

    def hold(self) -> None:
        """Start recording (idempotent); only the main thread may call it."""
        if self._old:
            return
        for sig in HELD:
            try:
                self._old[sig] = signal.signal(sig, self._record)
            except (ValueError, OSError):  # not the main thread, or not settable here
                pass

    def _record(self, signum: int, frame: types.FrameType | None) -> None:
        self._pending.append(signum)

    def pending(self) -> list[int]:
        return list(self._pending)

    def take(self) -> list[int]:
        """The signals held so far, forgotten by the gate."""
        out, self._pending = self._pending, []
        return out

    def stop_pending(self) -> int | None:
        """The first held signal that asks to stop (every held one does), or None."""
        return self._pending[0] if self._pending else None

    def release(self, redeliver: bool = True) -> None:
        """Give the previous handlers back; deliver the held signals again (`redeliver`)."""
        old, self._old = self._old, {}
        for sig, handler in old.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        pending = self.take()
        if redeliver:
            for sig in pending:
                signal.raise_signal(sig)

    def release_one(self, sig: int, redeliver: bool = True) -> None:
        """Give `sig` its previous handler back (e.g. SIGTSTP for a dry run, which may pause)."""
        if sig not in self._old:
            return
        handler = self._old.pop(sig)
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if sig in self._pending:
            self._pending = [s for s in self._pending if s != sig]
            if redeliver:
                signal.raise_signal(sig)


#: the process's one gate
GATE = SignalGate()
