"""Safety supervisor of a hardware run: the instruments go safe when the run stops renewing a lease.

`insitem run --hardware` starts this process before it touches any instrument::

    python -m insitem.acquisition.supervisor --fd N --ttl S --model M --potentiostat RES --microscope RES [--log PATH]

It runs in a session of its own (no controlling terminal: a Ctrl-C, Ctrl-Z or closed terminal
reaches the run's process group, never this one) and ignores SIGINT, SIGTSTP and SIGHUP.

The run and the supervisor share one socketpair (file descriptor N here). The run's controlling
thread sends a renewal (``R``) at least every `RENEW_INTERVAL_S` from its main loop and from the
slices of its clock's sleeps (`LeasedClock`); the supervisor answers each with ``A``. When no
renewal arrives for `ttl` seconds (the run stalled, was stopped by SIGTSTP/SIGSTOP, hangs in a
blocking call) or the socket closes without a release (the run died), the lease has lapsed: the
supervisor sends ``L`` (lapsed) to the run, then puts every instrument in its safe state at once,
one thread per instrument, and retries each with backoff until it reads the safe state back
(`:OUTP?` 0 on the SourceMeter, `BEAM:BLANK?` 1 on the TEM), printing on stderr and appending to
the log file what it has not confirmed yet. A confirmed blank is reported to the run as
``B <monotonic time>``, so a run that comes back can record the true beam-on time.

The run ends the lease with ``D`` (done: it confirmed its own safe state; the supervisor exits
without touching anything) or ``T`` (take over: make everything safe, then exit). SIGTERM makes
the supervisor put the instruments safe and exit; the run sees the socket close at its next
renewal and stops safely (`SupervisorLost`). The decision record is
docs/decisions/0013-safety-supervisor-lease.md.

This module stays light at import (no numpy, no drivers): the run imports it for `Lease`, and the
supervisor imports the instrument drivers once, at start, before it reports ready.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

#: lease time to live (s): the longest gap between two renewals of the run's controlling thread
#: in a whole loopback-hold run is 0.10-0.12 s (its longest blocking calls: configuring the
#: Keithley or the camera, starting an exposure; `python -m bench supervisor` prints it, the
#: supervisor logs it at every release); 2 s leaves a 16x margin for a loaded PC and slower real
#: instruments, and bounds the time from a stall to the safe state (docs/reliability.md)
DEFAULT_TTL_S = 2.0
#: lease time to live while the run sets up (imports, connects, creates its file): nothing is
#: switched on yet, and first imports take seconds on a loaded PC; the run arms the short lease
#: (`Lease.arm`) just before its first step, and switches nothing on before that
SETUP_TTL_S = 120.0
#: the run's controlling thread renews at most this often (renewals are one short send)
RENEW_INTERVAL_S = 0.05
#: the run stops when the supervisor has not answered for this long (it was stopped or hangs);
#: generous, because a starved supervisor on a loaded PC is not a fault
SUPERVISOR_SILENT_S = 15.0
#: how long the run waits for a starting supervisor before it refuses to switch anything on
READY_TIMEOUT_S = 60.0
#: instrument timeout of the supervisor's own connections (s)
INSTRUMENT_TIMEOUT_S = 2.0
#: retry backoff: first delay, factor, longest delay (s)
BACKOFF_S = (0.2, 2.0, 5.0)
#: the supervisor keeps retrying an instrument this long before it gives up with a CRITICAL line
GIVE_UP_S = 3600.0
#: after SIGTERM the supervisor tries this long, then exits
SIGTERM_GIVE_UP_S = 10.0


class LeaseLapsed(Exception):
    """The supervisor's lease lapsed: it has put (or is putting) the instruments in their safe state.

    `beam_blanked_mono_s`: `time.monotonic()` at which the supervisor read the blank back (NaN
    if the run has not heard of it yet)."""

    def __init__(self, message: str, beam_blanked_mono_s: float = math.nan) -> None:
        super().__init__(message)
        self.beam_blanked_mono_s = beam_blanked_mono_s


class SupervisorLost(Exception):
    """The safety supervisor died, never started or stopped answering: the run must stop safely."""


# ---------------------------------------------------------------------------------------------
# The run's side


class Lease:
    """The run's end of the lease: starts the supervisor, renews, learns of lapses, releases.

    Only the thread that created the lease renews it (`renew` is a no-op elsewhere), so a
    background thread never keeps a stalled run's lease alive.
    """

    def __init__(
        self,
        model: str,
        potentiostat: str,
        microscope: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        log_path: Path | None = None,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.ttl_s = ttl_s
        self._owner = threading.get_ident()
        self._buf = b""
        self._ready = False
        self._released = False
        self._armed = False
        self._lapsed: str | None = None
        self._lost: str | None = None
        self.beam_blanked_mono_s = math.nan
        now = time.monotonic()
        self._last_sent = now
        self._last_ack = now
        self.max_gap_s = 0.0  # longest time between two renewals of the controlling thread
        parent, child = socket.socketpair()
        self._sock = parent
        cmd = [sys.executable, "-m", "insitem.acquisition.supervisor", "--ttl", repr(ttl_s), "--model", model,
               "--potentiostat", potentiostat, "--microscope", microscope, "--give-up", repr(give_up_s)]
        if log_path is not None:
            cmd += ["--log", str(log_path)]
        try:
            if os.name == "posix":
                self._proc = subprocess.Popen(cmd + ["--fd", str(child.fileno())], pass_fds=(child.fileno(),),
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
            else:  # Windows: hand the socket over through the child's stdin
                flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                self._proc = subprocess.Popen(cmd + ["--share"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, creationflags=flags)
                assert self._proc.stdin is not None
                self._proc.stdin.write(child.share(self._proc.pid))
                self._proc.stdin.close()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- renewals ---------------------------------------------------------------------------------
    def renew(self, force: bool = False) -> None:
        """Renew the lease (from the controlling thread; at most every RENEW_INTERVAL_S unless
        `force`). Raises LeaseLapsed when the supervisor declared a lapse or this thread itself
        was away longer than the lease, SupervisorLost when the supervisor is gone."""
        if self._released or threading.get_ident() != self._owner:
            return
        now = time.monotonic()
        gap = now - self._last_sent
        if gap < RENEW_INTERVAL_S and not force:
            return
        self._receive()
        if gap > (self.ttl_s if self._armed else SETUP_TTL_S) and self._lapsed is None:
            self._lapsed = f"the run did not renew the lease for {gap:.1f} s (stalled or stopped; the lease lasts {self.ttl_s:g} s)"
        self._raise_if_over(now)
        try:
            self._sock.send(b"R\n")
        except BlockingIOError:  # the supervisor reads nothing: it is stopped or wedged
            pass
        except OSError:
            self._lost = "the safety supervisor is gone (its end of the lease closed)"
            self._raise_if_over(now)
        if self._armed:
            self.max_gap_s = max(self.max_gap_s, gap)
        self._last_sent = now

    def arm(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait (up to `timeout_s`) until the supervisor is up, then from now on the lease lasts
        `ttl_s`: the run is about to start its first step. SupervisorLost if it does not start."""
        if self._released or self._armed:
            return
        self._wait_ready(timeout_s, after="; nothing was switched on")
        try:
            self._sock.send(b"ARM\n")
        except OSError:
            pass
        self._armed = True
        self._last_sent = time.monotonic()

    def require_live(self, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Before `what` (unblanking, switching the output on): the lease must be armed and the
        supervisor up and answering; waits up to `timeout_s` for a starting one. Raises
        SupervisorLost otherwise."""
        if self._released or not self._armed:
            raise SupervisorLost(f"refusing {what}: the safety lease is not armed")
        self._wait_ready(timeout_s, before=f"refusing {what}: ")

    def _wait_ready(self, timeout_s: float, before: str = "", after: str = "") -> None:
        """Renew until the supervisor has answered; after `timeout_s`, SupervisorLost saying it did
        not start (between `before` and `after`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.renew(force=True)
            if self._ready:
                return
            if time.monotonic() > deadline:
                raise SupervisorLost(f"{before}the safety supervisor did not start within {timeout_s:g} s{after}")
            select.select([self._sock], [], [], 0.05)

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                if self._lapsed is None:
                    self._lost = "the safety supervisor died (its end of the lease closed)"
                break
            self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            kind, _, arg = line.decode("ascii", "replace").partition(" ")
            if kind in ("A", "READY"):
                self._ready = True
                self._last_ack = time.monotonic()
            elif kind == "L":
                self._lapsed = arg or "the lease lapsed"
            elif kind == "B":
                try:
                    self.beam_blanked_mono_s = float(arg)
                except ValueError:
                    pass

    def _raise_if_over(self, now: float) -> None:
        if self._lapsed is not None:
            raise LeaseLapsed(
                f"lease lapsed: {self._lapsed}; the supervisor put the instruments in their safe state",
                self.beam_blanked_mono_s,
            )
        if self._lost is not None:
            raise SupervisorLost(f"{self._lost}; stopped safely")
        if self._ready and now - self._last_ack > SUPERVISOR_SILENT_S:
            raise SupervisorLost(f"the safety supervisor has not answered for {now - self._last_ack:.0f} s; stopped safely")

    # -- the end ----------------------------------------------------------------------------------
    def release(self, confirmed: bool) -> None:
        """End the lease. `confirmed`: the run read back its own safe state, the supervisor exits
        doing nothing; otherwise it takes over (safe state with retries), then exits."""
        if self._released:
            return
        self._released = True
        try:
            self._sock.setblocking(True)
            self._sock.settimeout(2.0)
            self._sock.sendall(f"G {self.max_gap_s:.4f}\n".encode() + (b"D\n" if confirmed else b"T\n"))
        except OSError:
            pass
        finally:
            self._sock.close()
        if confirmed:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # it is still answering a lapse: it exits on its own once done

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release(confirmed=False)


class LeasedClock:
    """A real-time clock whose sleeps renew the lease in RENEW_INTERVAL_S slices (from the
    controlling thread only, see `Lease.renew`); every other call goes to the wrapped clock."""

    def __init__(self, clock: Any, lease: Lease) -> None:
        self._clock = clock
        self.lease = lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clock, name)

    @property
    def is_virtual(self) -> bool:
        return bool(self._clock.is_virtual)

    def now(self) -> float:
        return float(self._clock.now())

    def sleep_until(self, t_s: float) -> None:
        clock, lease = self._clock, self.lease
        while True:
            lease.renew()
            if t_s - clock.now() <= RENEW_INTERVAL_S:
                clock.sleep_until(t_s)
                return
            clock.sleep_until(clock.now() + RENEW_INTERVAL_S)

    def sleep(self, dt_s: float) -> None:
        self.sleep_until(self.now() + dt_s)

    def rig_time_of(self, mono_s: float) -> float:
        """Rig-clock time of a `time.monotonic()` reading (NaN stays NaN); a paced clock
        (`speed` simulated s per wall s) scales the wall interval."""
        return self.now() - float(getattr(self._clock, "speed", 1.0)) * (time.monotonic() - mono_s)


# ---------------------------------------------------------------------------------------------
# The supervisor's side


class Reporter:
    """One line per event on stderr (ignored once the terminal is gone) and in the log file."""

    def __init__(self, log_path: str | None) -> None:
        self.log_path = log_path
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        self._emit(message, stderr=True)

    def log_only(self, message: str) -> None:
        self._emit(message, stderr=False)

    def _emit(self, message: str, stderr: bool) -> None:
        line = f"insitem supervisor: {message}"
        with self._lock:
            if stderr:
                try:
                    print(line, file=sys.stderr, flush=True)
                except OSError:
                    pass
            if self.log_path:
                try:
                    with open(self.log_path, "a", encoding="utf-8") as f:
                        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
                except OSError:
                    pass


class Guard:
    """Puts each instrument in its safe state and reads it back, retrying with backoff."""

    def __init__(self, model: str, potentiostat: str, microscope: str, report: Callable[[str], None], give_up_s: float = GIVE_UP_S) -> None:
        from insitem.acquisition.rig import open_potentiostat
        from insitem.drivers.clock import RealClock
        from insitem.drivers.tem.client import TemMicroscope

        self.report = report
        self.give_up_s = give_up_s
        self.beam_blanked_mono_s = math.nan

        def potentiostat_safe() -> str:
            dev = open_potentiostat(model, potentiostat, RealClock(), timeout_s=INSTRUMENT_TIMEOUT_S)
            try:
                dev.safe_state()  # output-off state HIMP, :OUTP OFF, then :OUTP? must read 0
            finally:
                dev.close()
            return "output off (:OUTP? read 0)"

        def microscope_safe() -> str:
            dev = TemMicroscope(microscope, timeout_s=INSTRUMENT_TIMEOUT_S)
            try:
                dev.safe_state()  # BEAM:BLAN 1;:BEAM:BLAN? must read 1
                self.beam_blanked_mono_s = time.monotonic()
            finally:
                dev.close()
            return "beam blanked (BEAM:BLANK? read 1)"

        self.actions: dict[str, Callable[[], str]] = {"potentiostat": potentiostat_safe, "microscope": microscope_safe}

    def make_safe(self, why: str, quiet: bool = False, on_blanked: Callable[[float], None] | None = None, give_up_s: float | None = None) -> bool:
        """Every instrument at once, one thread each; True when all were read back safe."""
        t0 = time.monotonic()
        give_up = self.give_up_s if give_up_s is None else give_up_s
        results: dict[str, bool] = {}

        def one(role: str, action: Callable[[], str]) -> None:
            delay, factor, longest = BACKOFF_S
            tries = 0
            while True:
                tries += 1
                try:
                    what = action()
                except Exception as exc:  # noqa: BLE001 - any failure is retried, and said
                    elapsed = time.monotonic() - t0
                    if elapsed > give_up:
                        self.report(f"CRITICAL: {role} NOT confirmed safe after {tries} tries in {elapsed:.0f} s; giving up: {exc}")
                        results[role] = False
                        return
                    self.report(f"{role} NOT confirmed safe yet ({why}; try {tries}, {elapsed:.1f} s): {exc}; retrying in {delay:.1f} s")
                    time.sleep(delay)
                    delay = min(delay * factor, longest)
                    continue
                if role == "microscope" and on_blanked is not None:
                    on_blanked(self.beam_blanked_mono_s)
                if not quiet or tries > 1:
                    self.report(f"{role}: {what}, {time.monotonic() - t0:.2f} s after {why} (try {tries})")
                results[role] = True
                return

        threads = [threading.Thread(target=one, args=item, name=f"safe-{item[0]}", daemon=True) for item in self.actions.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return all(results.get(role, False) for role in self.actions)


def _send(sock: socket.socket, line: str) -> None:
    try:
        sock.send(line.encode("ascii") + b"\n")
    except OSError:  # the run is gone, or stopped with a full buffer: it learns from the lapse later
        pass


def supervise(sock: socket.socket, ttl_s: float, guard: Guard, report: Reporter) -> int:
    """Hold the lease on `sock` until the run releases it; on a lapse, make everything safe.
    Returns the exit status (0: released, or everything read back safe)."""
    sock.setblocking(False)
    _send(sock, "READY")
    last = time.monotonic()
    buf = b""
    why = ""
    run_gone = False
    lease_s = SETUP_TTL_S  # until the run arms the lease
    while not why:
        remaining = last + lease_s - time.monotonic()
        readable, _, _ = select.select([sock], [], [], max(0.0, min(remaining, 0.25)))
        if readable:
            data = _recv(sock)
            if not data:
                why, run_gone = "the run process ended without releasing the lease (it died)", True
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            last = time.monotonic()  # time of reading: a supervisor starved by a loaded PC is not a lapse
            acked = False
            for line in lines:
                if line.startswith(b"G "):
                    report.log_only(f"lease released; longest gap between renewals {line[2:].decode('ascii', 'replace')} s (lease {ttl_s:g} s)")
                if line == b"D":
                    return 0
                if line == b"T":
                    return 0 if guard.make_safe("the run's request", quiet=True) else 1
                if line == b"ARM":
                    lease_s = ttl_s
                if line == b"R" and not acked:
                    _send(sock, "A")
                    acked = True
        elif time.monotonic() - last > lease_s:
            why = f"no renewal for {time.monotonic() - last:.1f} s (the run stalled, was stopped or hangs)"
    report(f"the lease lapsed: {why}; putting every instrument in its safe state")
    _send(sock, f"L {why}")
    ok = guard.make_safe("the lapse", on_blanked=lambda mono: _send(sock, f"B {mono!r}"))
    if run_gone:
        return 0 if ok else 1
    # the run may come back (SIGCONT): it learns of the lapse from the lines already sent, stops
    # with its own safe state and releases; if it dies instead, everything is made safe once more
    while True:
        data = b""
        try:
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                data = _recv(sock)
                if not data:
                    return 0 if guard.make_safe("the run's end", quiet=True) else 1
        except OSError:
            return 0 if guard.make_safe("the run's end", quiet=True) else 1
        if b"D" in data.split(b"\n"):
            return 0 if ok else 1
        if b"T" in data.split(b"\n"):
            return 0 if guard.make_safe("the run's request", quiet=True) else 1


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return b"\n"  # spurious wake-up: nothing, but not an end of file
    except OSError:
        return b""


def main(argv: Sequence[str] | None = None) -> int:
    for name in ("SIGINT", "SIGTSTP", "SIGHUP", "SIGTTOU", "SIGTTIN"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)  # the terminal's signals are for the run, not its guard
    parser = argparse.ArgumentParser(prog="python -m insitem.acquisition.supervisor")
    parser.add_argument("--fd", type=int, help="file descriptor of the run's end of the lease socket (POSIX)")
    parser.add_argument("--share", action="store_true", help="read the socket from stdin (Windows socket.share)")
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_S)
    parser.add_argument("--model", required=True)
    parser.add_argument("--potentiostat", required=True)
    parser.add_argument("--microscope", required=True)
    parser.add_argument("--log")
    parser.add_argument("--give-up", type=float, default=GIVE_UP_S)
    args = parser.parse_args(argv)
    if args.share:
        sock = socket.fromshare(sys.stdin.buffer.read())  # type: ignore[attr-defined]
    elif args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        parser.error("give --fd N or --share")
    report = Reporter(args.log)
    guard = Guard(args.model, args.potentiostat, args.microscope, report, args.give_up)

    def on_sigterm(signum: int, frame: Any) -> None:
        report("SIGTERM: putting every instrument in its safe state, then exiting (the run stops at its next renewal)")
        sock.close()
        raise SystemExit(0 if guard.make_safe("SIGTERM", quiet=True, give_up_s=SIGTERM_GIVE_UP_S) else 1)

    signal.signal(signal.SIGTERM, on_sigterm)
    return supervise(sock, args.ttl, guard, report)


if __name__ == "__main__":
    sys.exit(main())
