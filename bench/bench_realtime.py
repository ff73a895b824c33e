"""Real-time step timing: how late each potentiostat `set_voltage` lands against its schedule while
full spectrum-image frames are read out and written (issue 4 target: p99 <= 5 ms in `--realtime`).

A 30 s CV staircase (1 mV stairs every 50 ms, 600 stairs) on the in-situ LASGTP sample; every 4 s
a 330 x 2048 Li-K spectrum image (2 x 0.5 s summed) and right after it a 330 x 2048 Ti-L/O-K
image (1 s, the energy offset switched in between): 16 images, 24 full-frame read-outs in 30 s,
each written to an HDF5 run file while the staircase runs. The potentiostat is wrapped so every `set_voltage` records the clock time at which it
returned; its schedule is the plan's stair start (plan time + the runner's offset), matched by
level and time. `set p99` is how long `set_voltage` itself took (the p99), `measure` how long the
reading that ends each PC-timed stair took (it must finish before the next level is set).

Two rigs:
* `sim`: the simulated rig on a `PacedClock(1.0)` (what `insitem run --realtime` builds). The
  camera synthesises each frame in this process (40-250 ms of numpy per frame).
* `hardware`: the real drivers over TCP loopback against `insitem serve` in a separate process
  (emulated Keithley 2450, GIF, TEM on a RealClock). The GIF socket carries one binning for rows and
  columns, so that window reads 330 unbinned rows x 2048 channels (the same frame size).

Staircase modes: `pc` (every stair set by the PC: 600 `set_voltage` calls), `sweep` (the
default: instrument-timed sweeps between exposure events; only the stairs an exposure start or end
falls inside are PC-timed), and `pc-no-frames`, the control: the same PC-timed staircase with no
exposure at all, i.e. what the machine gives a sleeping thread at that moment.

Run: .venv/bin/python bench/bench_realtime.py [--rig sim hardware] [--mode pc sweep] [--repeats 1]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

CV_S = 30.0


def protocol_text(hardware: bool, frames: bool = True) -> str:
    if hardware:
        li_rows, ti_rows, binning = "[800, 1130]", "[800, 1130]", "[1, 1]"
    else:
        li_rows, ti_rows, binning = "[34, 2014]", "[34, 2014]", "[6, 1]"
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
      binning: {binning}
      readout_rows: {li_rows}
    - name: ti-l-o-k
      edges: [Ti-L23, O-K]
      energy_offset: 420 eV
      exposure: 1 s
      binning: {binning}
      readout_rows: {ti_rows}
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


class TimedPotentiostat:
    """Forwards to a potentiostat; records (clock time when `set_voltage` returned, level), the
    time each `set_voltage` was called, and how long each `measure` took."""

    def __init__(self, pot: Any, clock: Any) -> None:
        self._pot = pot
        self._clock = clock
        self.calls: list[tuple[float, float]] = []
        self.called_s: list[float] = []
        self.measure_s: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pot, name)

    def set_voltage(self, voltage_V: float) -> None:
        self.called_s.append(self._clock.now())
        self._pot.set_voltage(voltage_V)
        self.calls.append((self._clock.now(), voltage_V))

    def measure(self) -> Any:
        t0 = self._clock.now()
        reading = self._pot.measure()
        self.measure_s.append(self._clock.now() - t0)
        return reading


def lateness_s(calls: list[tuple[float, float]], plan: Any, offset_s: float) -> np.ndarray:
    """Per call: actual time - scheduled start of the stair it set (latest stair at that level
    scheduled no later than the call)."""
    t_all, v_all = [], []
    for step in plan.steps:
        t, v, _ = step.point_arrays()
        t_all.append(t + offset_s)
        v_all.append(v)
    t_s, v_s = np.concatenate(t_all), np.concatenate(v_all)
    out = []
    for actual, level in calls:
        k = np.flatnonzero(np.isclose(v_s, level, atol=1e-9, rtol=0) & (t_s <= actual + 1e-6))
        if len(k):
            out.append(actual - t_s[k[-1]])
    return np.asarray(out)


def _run(plan: Any, protocol: Any, text: str, bundle: Any, path: Path, use_sweeps: bool) -> tuple[Any, np.ndarray, TimedPotentiostat]:
    from insitem.acquisition.run_command import window_specs
    from insitem.acquisition.runfile import RunFile, RunFileConfig
    from insitem.acquisition.runner import Runner

    timed = TimedPotentiostat(bundle.rig.potentiostat, bundle.rig.clock)
    bundle.rig.potentiostat = timed
    config = RunFileConfig(
        title=protocol.name,
        windows=window_specs(plan, bundle),
        beam_energy_keV=protocol.beam.high_tension / 1e3,
        convergence_angle_mrad=protocol.spectrometer.convergence_semiangle,
        collection_angle_mrad=protocol.spectrometer.collection_semiangle,
        protocol_text=text,
        instruments=bundle.identify(),
        ground_truth=bundle.ground_truth_spec,
    )
    rf = RunFile.create(path, config)
    runner = Runner(plan, bundle.rig, rf, ground_truth=bundle.ground_truth, use_sweeps=use_sweeps)
    result = runner.run()
    if result.status != "completed":
        raise SystemExit(f"run {result.status}: {result.reason}")
    return result, lateness_s(timed.calls, plan, runner._offset), timed


def run_sim(use_sweeps: bool, workdir: Path, frames: bool = True) -> tuple[Any, np.ndarray, TimedPotentiostat]:
    from insitem.acquisition.rig import SimRigBundle
    from insitem.drivers.clock import PacedClock
    from insitem.protocols.loader import loads
    from insitem.protocols.plan import make_plan

    text = protocol_text(hardware=False, frames=frames)
    protocol = loads(text)
    plan = make_plan(protocol)
    bundle = SimRigBundle.create(protocol, PacedClock(1.0))
    try:
        return _run(plan, protocol, text, bundle, workdir / "sim.h5", use_sweeps)
    finally:
        bundle.close()


def run_hardware(use_sweeps: bool, workdir: Path, frames: bool = True) -> tuple[Any, np.ndarray, TimedPotentiostat]:
    from insitem.acquisition.rig import build_hardware_rig
    from insitem.drivers.clock import RealClock
    from insitem.protocols.loader import loads
    from insitem.protocols.plan import make_plan

    text = protocol_text(hardware=True, frames=frames)
    proto_path = workdir / "realtime-bench.yaml"
    proto_path.write_text(text, encoding="utf-8")
    protocol = loads(text)
    plan = make_plan(protocol)
    serve = subprocess.Popen(
        [sys.executable, "-m", "insitem.acquisition.cli", "serve", "keithley2450", "gif", "tem", "--protocol", str(proto_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        resources: dict[str, str] = {}
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
        reader.start()
        t0 = time.monotonic()
        while len(resources) < 3 and time.monotonic() - t0 < 60:
            for line in lines:
                m = re.fullmatch(r"(potentiostat|camera|microscope)=(\S+)", line.strip())
                if m:
                    resources[m.group(1)] = m.group(2)
            time.sleep(0.1)
        if len(resources) < 3:
            raise SystemExit(f"insitem serve did not print three resources: {lines}")
        bundle = build_hardware_rig(protocol, RealClock(), resources)
        try:
            return _run(plan, protocol, text, bundle, workdir / "hw.h5", use_sweeps)
        finally:
            bundle.rig.safe_state()
            bundle.close()
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rig", nargs="+", choices=["sim", "hardware"], default=["sim", "hardware"])
    ap.add_argument("--mode", nargs="+", choices=["pc", "sweep", "pc-no-frames"], default=["pc", "sweep", "pc-no-frames"])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(f"{'rig':9} {'staircase':9} {'steps':>6} {'images':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'> 5 ms':>7}"
          f" {'set p99':>8} {'measure p50/p99 ms':>19}")
    for rig in args.rig:
        for mode in args.mode:
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as d:
                    fn = run_sim if rig == "sim" else run_hardware
                    result, late, timed = fn(mode == "sweep", Path(d), frames=mode != "pc-no-frames")
                ms = late * 1e3
                p50, p99, mx = np.percentile(ms, 50), np.percentile(ms, 99), ms.max()
                set_ms = (np.array([c[0] for c in timed.calls]) - np.array(timed.called_s)) * 1e3
                meas = np.array(timed.measure_s or [np.nan]) * 1e3
                print(f"{rig:9} {mode:9} {len(ms):6d} {result.exposures:6d} {p50:8.2f} {p99:8.2f} {mx:8.1f} {int((ms > 5).sum()):7d}"
                      f" {np.percentile(set_ms, 99):8.2f} {np.median(meas):9.2f}/{np.percentile(meas, 99):.2f}", flush=True)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
