"""Safety supervisor: time from a stalled run (SIGSTOP mid-exposure) to the safe state read back.

`insitem run loopback-hold --hardware` runs against the emulated Keithley 2450, GIF and TEM (in
this process, on loopback TCP) as a child in its own session. 0.2 s into its first exposure the
run is frozen with SIGSTOP; the emulators' own state is then polled every millisecond until the
SourceMeter's output is off (relay open) and the beam blanked. Printed: the median, min and max
over the repeats of the time from SIGSTOP to the beam blanked, to the output off, and to both;
the lease's time to live; and, from a run left alone, the longest gap between two renewals of the
run's controlling thread (the supervisor logs it when the run releases the lease).

Run: .venv/bin/python -m bench supervisor [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from insitem.acquisition.supervisor import DEFAULT_TTL_S
from insitem.simulators.serve import start_servers

PROTOCOL = "loopback-hold"


def _command(*argv: str) -> list[str]:
    script = Path(sys.executable).with_name("insitem")
    return [str(script), *argv] if script.exists() else [sys.executable, "-m", "insitem.cli", *argv]


def _start_run(servers: Any, out: Path) -> subprocess.Popen[bytes]:
    res = [a for role, value in servers.resources.items() for a in ("--resource", f"{role}={value}")]
    return subprocess.Popen(_command("run", PROTOCOL, "--hardware", "--out", str(out), *res, "--no-progress", "--no-figures"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def one_stall(workdir: Path, k: int) -> tuple[float, float]:
    """(s from SIGSTOP to beam blanked, s from SIGSTOP to output off), read from the emulators."""
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"]) as servers:
        tem = servers.servers["tem"]
        smu = servers.smu
        assert smu is not None
        unblanked = threading.Event()
        orig = tem.instrument.set

        def set_(name: str, value: Any) -> None:
            orig(name, value)
            if name == "beam_blanked" and not value:
                unblanked.set()

        tem.instrument.set = set_
        proc = _start_run(servers, workdir / f"stall-{k}.h5")
        try:
            if not unblanked.wait(120):
                raise SystemExit("bench supervisor: the run never unblanked the beam")
            time.sleep(0.2)
            os.kill(proc.pid, signal.SIGSTOP)
            t0 = time.perf_counter()
            t_blank = t_off = None
            while (t_blank is None or t_off is None) and time.perf_counter() - t0 < 60:
                now = time.perf_counter() - t0
                if t_blank is None and tem.microscope.beam.blanked:
                    t_blank = now
                if t_off is None and not smu.output_on and servers.world.applied_V is None:
                    t_off = now
                time.sleep(1e-3)
            if t_blank is None or t_off is None:
                raise SystemExit("bench supervisor: not safe within 60 s")
            return t_blank, t_off
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(1.0)  # the supervisor confirms once more after the run's end, then exits


def longest_renewal_gap(workdir: Path) -> str:
    """A whole undisturbed run; the longest renewal gap the supervisor logged at the release."""
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"]) as servers:
        out = workdir / "whole.h5"
        proc = _start_run(servers, out)
        proc.wait(timeout=300)
    log = out.with_name(out.name + ".supervisor.log")
    m = re.search(r"longest gap between renewals ([0-9.]+) s", log.read_text() if log.exists() else "")
    return f"{float(m.group(1)):.3f} s" if m else "not logged"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        gap = longest_renewal_gap(workdir)
        results = [one_stall(workdir, k) for k in range(args.repeats)]
    blank = [r[0] for r in results]
    off = [r[1] for r in results]
    both = [max(r) for r in results]
    print(f"lease time to live: {DEFAULT_TTL_S:g} s; longest renewal gap of an undisturbed {PROTOCOL} run: {gap}")
    for name, xs in (("SIGSTOP -> beam blanked", blank), ("SIGSTOP -> output off", off), ("SIGSTOP -> both safe", both)):
        print(f"{name:24s} median {statistics.median(xs):.3f} s  (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})")


if __name__ == "__main__":
    main()
