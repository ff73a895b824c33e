"""Real-time step timing: how late each potentiostat `set_voltage` lands against its schedule while
full spectrum-image frames are read out and written (issue 4 target: p99 <= 5 ms in `--realtime`).

A 30 s CV staircase (1 mV stairs every 50 ms, 600 stairs) on the in-situ LASGTP sample; every 4 s
a 330 x 2048 Li-K spectrum image (2 x 0.5 s summed) and right after it a 330 x 2048 Ti-L/O-K
image (1 s, the energy offset switched in between). Both windows are the shipped ones: CCD rows
34-2014 binned 6 x 1. Every image is written to an HDF5 run file while the staircase runs. The
potentiostat is wrapped so every `set_voltage` records the clock time at which it returned; its
schedule is the plan's stair start (plan time + the runner's offset), matched by level and time.
`set p99` is how long `set_voltage` itself took (the p99), `measure` how long the reading that
ends each PC-timed stair took (it must finish before the next level is set).

Rigs:
* `sim`: the simulated rig on a `PacedClock(1.0)` (what `insitem run --realtime` builds). The
  camera synthesises each frame in this process.
* `hardware`: the real drivers over TCP loopback against one `insitem serve keithley2450 gif tem`
  process (emulated Keithley 2450, GIF, TEM sharing one simulated world on a RealClock). The GIF
  socket carries one binning, so the driver requests each 6 x 1 frame at 1 x 1 (1980 x 2048
  uint16, 8.1 MB on the wire) and sums the rows itself (docs/decisions/0005).
* `hardware-split`: the same drivers against three `insitem serve` processes, one per
  instrument (each with its own simulated world): the Keithley emulator's replies no longer wait
  behind the GIF emulator's frame synthesis, as a real SourceMeter's would not.
`--serve-nice N [M ...]` starts the process serving the GIF under `nice -n N` (with `hardware-split` the
Keithley and TEM emulators keep priority 0), so that on this 2-core machine the camera's frame
synthesis, done on the camera's own PC on real hardware, yields the CPU to the runner process and
to the SourceMeter emulator, whose reply times stand in for a dedicated instrument's. Rows with
a nice value are labelled `RIG/nN`. `--serve-cpu K` runs every emulator process on CPU K only
(taskset), leaving the runner process free to use both, a closer stand-in for instruments with
their own processors.

Staircase modes: `pc` (every stair set by the PC: 600 `set_voltage` calls), `sweep`
(instrument-timed sweeps between exposure events; only the stairs an exposure start or end falls
inside are PC-timed), and `pc-no-frames`, the control: the same PC-timed staircase with no
exposure at all, i.e. what the machine gives a sleeping thread at that moment. Repeats run the
rigs and modes interleaved (repeat 1 of every row, then repeat 2, ...), so each control row is
measured in the same minutes as the rows it controls; a summary of medians and ranges follows.

On the hardware rigs the runner process is also profiled: per frame, the time the I/O thread spent
receiving the image bytes (header to last chunk), summing the 6 rows (`bin`) and writing the frame
to the run file; and each stair later than 5 ms is attributed to whichever of those (or the
stair's closing `measure`) overlapped most of its lateness, `none` when nothing in this process did
(the thread waited for a CPU another process had).

Run: .venv/bin/python bench/bench_realtime.py [--rig sim hardware hardware-split]
     [--mode pc sweep pc-no-frames] [--repeats 1] [--serve-nice 0 [10 ...]] [--serve-cpu K]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

CV_S = 30.0
LATE_S = 5e-3
HW_KINDS = ("keithley2450", "gif", "tem")


def protocol_text(frames: bool = True) -> str:
    return f"""\
name: realtime-bench
description: {CV_S:g} s CV staircase (1 mV every 50 ms) with two 330 x 2048 spectrum images every 4 s
sample:
  description: LiCoO2 | LASGTP | Pt (simulated)
  preset: lasgtp_bulk
  initial_state: cycled
instruments:
  potentiostat: {{model: keithley2450}}
  camera: {{model: gif}}
  microscope: {{model: insitem-tem}}
safety:
  voltage_min: 0 V
  voltage_max: 3 V
  current_compliance: 1 mA
  max_dose_rate: 10 e/Å^2/s
  max_total_dose: 50000 e/Å^2
  max_exposure: 5 s
beam:
  current: 0.5 nA
  illuminated_diameter: 2 um
spectrometer:
  slit: {{length: 1880 nm, width: 200 nm}}
  windows:
    - name: li-k
      edges: [Li-K]
      energy_offset: 35 eV
      exposure: 1 s
      frames: 2
      binning: [6, 1]
      readout_rows: [34, 2014]
    - name: ti-l-o-k
      edges: [Ti-L23, O-K]
      energy_offset: 420 eV
      exposure: 1 s
      binning: [6, 1]
      readout_rows: [34, 2014]
steps:
  - cv:
      start: 1.0 V
      vertices: [1.3 V]
      end: 1.0 V
      sweep_rate: 1200 mV/min
      step: 1 mV
      cycles: 1
""" + ("""      exposures:
        - windows: [li-k, ti-l-o-k]
          every: 4 s
""" if frames else "")


class Intervals:
    """(start, end, label) spans on one clock, appended from any thread (list.append is atomic)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.spans: list[tuple[float, float, str]] = []

    def wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = self.clock.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans.append((t0, self.clock.now(), label))
        return timed

    def durations_ms(self, label: str) -> np.ndarray:
        return np.array([(b - a) * 1e3 for a, b, lab in self.spans if lab == label])


class TimedPotentiostat:
    """Forwards to a potentiostat; records (clock time when `set_voltage` returned, level), the
    time each `set_voltage` was called, and each `measure` as a span."""

    def __init__(self, pot: Any, spans: Intervals) -> None:
        self._pot = pot
        self._clock = spans.clock
        self._spans = spans
        self.calls: list[tuple[float, float]] = []
        self.called_s: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pot, name)

    def set_voltage(self, voltage_V: float) -> None:
        self.called_s.append(self._clock.now())
        self._pot.set_voltage(voltage_V)
        self.calls.append((self._clock.now(), voltage_V))

    def measure(self) -> Any:
        return self._spans.wrap(self._pot.measure, "measure")()


def instrument_camera(cam: Any, spans: Intervals) -> Callable[[], None]:
    """Record the GIF driver's image receive (reply header to last chunk) and software binning
    as spans; returns the function that removes the class-level patch."""
    from insitem.drivers.gif import camera as gif_camera

    header_end: dict[int, float] = {}
    read_reply = cam._read_reply
    receive_image = cam._receive_image

    def _read_reply(code: int) -> Any:
        reply = read_reply(code)
        header_end[threading.get_ident()] = spans.clock.now()
        return reply

    def _receive_image(*args: Any, **kwargs: Any) -> Any:
        out = receive_image(*args, **kwargs)
        t1 = spans.clock.now()
        spans.spans.append((header_end.get(threading.get_ident(), t1), t1, "receive"))
        return out

    cam._read_reply = _read_reply
    cam._receive_image = _receive_image
    cls = gif_camera._WireGeometry
    original_bin = cls.bin
    cls.bin = spans.wrap(original_bin, "bin")  # type: ignore[method-assign]

    def restore() -> None:
        cls.bin = original_bin  # type: ignore[method-assign]
    return restore


def lateness_s(calls: list[tuple[float, float]], plan: Any, offset_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per call: (actual time - scheduled start of the stair it set, that scheduled start); the
    stair is the latest one at that level scheduled no later than the call."""
    t_all, v_all = [], []
    for step in plan.steps:
        t, v, _ = step.point_arrays()
        t_all.append(t + offset_s)
        v_all.append(v)
    t_s, v_s = np.concatenate(t_all), np.concatenate(v_all)
    late, sched = [], []
    for actual, level in calls:
        k = np.flatnonzero(np.isclose(v_s, level, atol=1e-9, rtol=0) & (t_s <= actual + 1e-6))
        if len(k):
            late.append(actual - t_s[k[-1]])
            sched.append(t_s[k[-1]])
    return np.asarray(late), np.asarray(sched)


def attribute(late: np.ndarray, sched: np.ndarray, spans: Intervals) -> Counter[str]:
    """For each stair later than `LATE_S`: the span label covering most of [scheduled, actual]
    (`none` when no span covers 1 ms of it)."""
    out: Counter[str] = Counter()
    for lt, t0 in zip(late, sched):
        if lt <= LATE_S:
            continue
        t1 = t0 + lt
        cover: dict[str, float] = defaultdict(float)
        for a, b, label in spans.spans:
            overlap = min(b, t1) - max(a, t0)
            if overlap > 0:
                cover[label] += overlap
        best = max(cover.items(), key=lambda kv: kv[1], default=("none", 0.0))
        out[best[0] if best[1] >= 1e-3 else "none"] += 1
    return out


class RunResult:
    def __init__(self, result: Any, late: np.ndarray, sched: np.ndarray, timed: TimedPotentiostat, spans: Intervals) -> None:
        self.result, self.late, self.sched, self.timed, self.spans = result, late, sched, timed, spans


def _run(plan: Any, protocol: Any, text: str, bundle: Any, path: Path, use_sweeps: bool) -> RunResult:
    from insitem.acquisition.launch import runfile_config
    from insitem.acquisition.runfile import RunFile
    from insitem.acquisition.runner import Runner

    spans = Intervals(bundle.rig.clock)
    timed = TimedPotentiostat(bundle.rig.potentiostat, spans)
    bundle.rig.potentiostat = timed
    rf = RunFile.create(path, runfile_config(plan, bundle, text, bundle.identify()))
    rf.append_exposure = spans.wrap(rf.append_exposure, "write")  # type: ignore[method-assign]
    rf.append_electrochemistry = spans.wrap(rf.append_electrochemistry, "write-ec")  # type: ignore[method-assign]
    restore = instrument_camera(bundle.rig.camera, spans) if hasattr(bundle.rig.camera, "_receive_image") else None
    try:
        runner = Runner(plan, bundle.rig, rf, ground_truth=bundle.ground_truth, use_sweeps=use_sweeps)
        result = runner.run()
    finally:
        if restore:
            restore()
    if result.status != "completed":
        raise SystemExit(f"run {result.status}: {result.reason}")
    late, sched = lateness_s(timed.calls, plan, runner._offset)
    return RunResult(result, late, sched, timed, spans)


def run_sim(use_sweeps: bool, workdir: Path, frames: bool = True, **_: Any) -> RunResult:
    from insitem.acquisition.rig import SimRigBundle
    from insitem.drivers.clock import PacedClock
    from insitem.protocols.loader import loads
    from insitem.protocols.plan import make_plan

    text = protocol_text(frames=frames)
    protocol = loads(text)
    plan = make_plan(protocol)
    bundle = SimRigBundle.create(protocol, PacedClock(1.0))
    try:
        return _run(plan, protocol, text, bundle, workdir / "sim.h5", use_sweeps)
    finally:
        bundle.close()


def _start_serve(kinds: tuple[str, ...], proto_path: Path, nice: int, cpu: int | None) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [sys.executable, "-m", "insitem.cli", "serve", *kinds, "--protocol", str(proto_path)]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    return proc, lines


def run_hardware(use_sweeps: bool, workdir: Path, frames: bool = True, split: bool = False, nice: int = 0,
                 cpu: int | None = None) -> RunResult:
    from insitem.acquisition.rig import build_hardware_rig
    from insitem.drivers.clock import RealClock
    from insitem.protocols.loader import loads
    from insitem.protocols.plan import make_plan

    text = protocol_text(frames=frames)
    proto_path = workdir / "realtime-bench.yaml"
    proto_path.write_text(text, encoding="utf-8")
    protocol = loads(text)
    plan = make_plan(protocol)
    groups = [(k,) for k in HW_KINDS] if split else [HW_KINDS]
    serves = [_start_serve(g, proto_path, nice if "gif" in g else 0, cpu) for g in groups]
    try:
        resources: dict[str, str] = {}
        t0 = time.monotonic()
        while len(resources) < 3 and time.monotonic() - t0 < 60:
            for _, lines in serves:
                for line in lines:
                    m = re.fullmatch(r"(potentiostat|camera|microscope)=(\S+)", line.strip())
                    if m:
                        resources[m.group(1)] = m.group(2)
            time.sleep(0.1)
        if len(resources) < 3:
            raise SystemExit(f"insitem serve did not print three resources: {[lines for _, lines in serves]}")
        bundle = build_hardware_rig(protocol, RealClock(), resources)
        try:
            return _run(plan, protocol, text, bundle, workdir / "hw.h5", use_sweeps)
        finally:
            bundle.rig.safe_state()
            bundle.close()
    finally:
        for proc, _ in serves:
            proc.terminate()
        for proc, _ in serves:
            proc.wait(timeout=30)


def _fmt_range(values: list[float], digits: int = 2) -> str:
    v = np.asarray(values)
    return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}-{v.max():.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rig", nargs="+", choices=["sim", "hardware", "hardware-split"], default=["sim", "hardware"])
    ap.add_argument("--mode", nargs="+", choices=["pc", "sweep", "pc-no-frames"], default=["pc", "sweep", "pc-no-frames"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--serve-nice", type=int, nargs="+", default=[0],
                    help="nice values of the process serving the GIF (hardware rigs; one row set per value)")
    ap.add_argument("--serve-cpu", type=int, default=None,
                    help="run the emulator processes on this CPU only (taskset; the runner process is not pinned)")
    args = ap.parse_args(argv)
    print(f"{'rig':18} {'staircase':12} {'steps':>5} {'img':>3} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'>5ms':>4}"
          f" {'set p99':>7} {'measure p50/p99':>15}  I/O thread per frame p50/max ms; late stairs by cause", flush=True)
    p99s: dict[tuple[str, str], list[float]] = defaultdict(list)
    p50s: dict[tuple[str, str], list[float]] = defaultdict(list)
    maxs: dict[tuple[str, str], list[float]] = defaultdict(list)
    variants = [(rig, n) for rig in args.rig for n in (args.serve_nice if rig != "sim" else [0])]
    for _ in range(args.repeats):
        for rig_name, nice in variants:
            rig = rig_name + (f"/n{nice}" if nice else "")
            for mode in args.mode:
                with tempfile.TemporaryDirectory() as d:
                    fn = run_sim if rig_name == "sim" else run_hardware
                    r = fn(mode == "sweep", Path(d), frames=mode != "pc-no-frames",
                           split=rig_name == "hardware-split", nice=nice, cpu=args.serve_cpu)
                ms = r.late * 1e3
                p50, p99, mx = np.percentile(ms, 50), np.percentile(ms, 99), ms.max()
                p50s[rig, mode].append(p50)
                p99s[rig, mode].append(p99)
                maxs[rig, mode].append(mx)
                set_ms = (np.array([c[0] for c in r.timed.calls]) - np.array(r.timed.called_s)) * 1e3
                meas = r.spans.durations_ms("measure")
                meas = meas if len(meas) else np.array([np.nan])
                io = []
                for label in ("receive", "bin", "write"):
                    d_ms = r.spans.durations_ms(label)
                    if len(d_ms):
                        io.append(f"{label} {np.median(d_ms):.0f}/{d_ms.max():.0f}")
                causes = attribute(r.late, r.sched, r.spans)
                print(f"{rig:18} {mode:12} {len(ms):5d} {r.result.exposures:3d} {p50:7.2f} {p99:7.2f} {mx:7.1f} {int((ms > 5).sum()):4d}"
                      f" {np.percentile(set_ms, 99):7.2f} {np.median(meas):7.2f}/{np.percentile(meas, 99):<7.2f}"
                      f"  {', '.join(io)}{'; ' if io else ''}{dict(causes.most_common())}", flush=True)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    if args.repeats > 1:
        print(f"\nmedian (range) over {args.repeats} repeats")
        print(f"{'rig':18} {'staircase':12} {'p50 ms':>20} {'p99 ms':>22} {'max ms':>22}")
        for key in p99s:
            print(f"{key[0]:18} {key[1]:12} {_fmt_range(p50s[key]):>20} {_fmt_range(p99s[key]):>22} {_fmt_range(maxs[key], 1):>22}")


if __name__ == "__main__":
    main()
