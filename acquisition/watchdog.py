"""Dead-man watchdog of a hardware run: safe state when the run process dies without a word.

SIGKILL, the out-of-memory killer or a crash of the interpreter end `insitem run` without any
of its own code running, which would leave the battery under bias and the beam on the sample.
`insitem run --hardware` therefore starts this small process first::

    python -m insitem.acquisition.watchdog MODEL POTENTIOSTAT_RESOURCE MICROSCOPE_RESOURCE

with a pipe on its stdin, and writes ``done`` to the pipe on every exit path it still controls
(after its own safe state). The watchdog blocks reading the pipe; the kernel closes the pipe when
the run process dies, however it dies. End of input without ``done`` -> the watchdog opens the
potentiostat and the microscope itself and puts each in its safe state (output off in the
high-impedance state, verified; beam blanked, read back), prints one line per instrument on
stderr and exits (1 if an instrument could not be made safe). It runs in its own session, so a
Ctrl-C at the terminal reaches only the run.

It cannot help when the whole PC or the instrument link dies; the instruments' own interlocks
are for that.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import IO, Sequence

DONE = b"done\n"


class Watchdog:
    """Parent side: start the watchdog for a rig's resources; `done()` releases it."""

    def __init__(self, model: str, potentiostat: str, microscope: str) -> None:
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "insitem.acquisition.watchdog", model, potentiostat, microscope],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def done(self) -> None:
        """The run reached its end through its own code: the watchdog exits doing nothing."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(DONE)
            proc.stdin.close()
        except OSError:  # the watchdog is gone already
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

    def __enter__(self) -> "Watchdog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


def make_safe(model: str, potentiostat: str, microscope: str, err: IO[str]) -> int:
    """Open both instruments and put each in its safe state; 0 if both are confirmed safe."""
    from insitem.acquisition.rig import _open_potentiostat
    from insitem.drivers.clock import RealClock
    from insitem.drivers.tem.client import TemMicroscope

    failures = 0
    for role, open_ in (
        ("potentiostat", lambda: _open_potentiostat(model, potentiostat, RealClock())),
        ("microscope", lambda: TemMicroscope(microscope)),
    ):
        try:
            dev = open_()
            try:
                dev.safe_state()
            finally:
                dev.close()
            print(f"insitem watchdog: the run died; {role} put in its safe state", file=err, flush=True)
        except Exception as exc:  # noqa: BLE001 - try every instrument, report each in one line
            failures += 1
            print(f"insitem watchdog: the run died; {role} NOT confirmed safe: {exc}", file=err, flush=True)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m insitem.acquisition.watchdog MODEL POTENTIOSTAT_RESOURCE MICROSCOPE_RESOURCE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run, not for its guard
    said = sys.stdin.buffer.read()  # until the run closes the pipe, or dies
    if said.startswith(DONE.strip()):
        return 0
    return make_safe(args[0], args[1], args[2], sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
