"""A shipped protocol run `--hardware --time-scale K` against emulators served for it at K.

`run_against_emulators(name, K, out)` does in one process what the README's two commands do
(`insitem serve --protocol NAME --time-scale K`, then the printed `insitem run ... --hardware
--time-scale K --resource ...`): `start_servers` with the protocol's own instruments, then the
CLI's `main`. What the tests assert afterwards is read from the emulators themselves (output,
blanker, the world's source level, the frames the emulated DM was asked for), not from the
runner's belief.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insitem.cli.main import main
from insitem.protocols.loader import load_and_plan
from insitem.protocols.plan import Plan
from insitem.simulators.serve import start_servers


@dataclass
class PacedRun:
    name: str
    time_scale: float
    plan: Plan
    status: int
    path: Path
    wall_s: float
    output_on: bool | None  # the emulated SourceMeter's output at the end
    beam_blanked: bool  # the TEM emulator's blanker at the end
    applied_V: float | None  # what the world's cell is held at (None: open circuit)
    frames_acquired: int  # acquisitions the emulated DM made (dark references excluded)
    identity_serials: dict[str, str]


def planned_readings(plan: Plan) -> int:
    """Stairs with the output on: one PC-timed reading each (decision 0010)."""
    return int(sum(np.isfinite(step.point_arrays()[1]).sum() for step in plan.steps))


def run_against_emulators(name: str, time_scale: float, out: Path) -> PacedRun:
    protocol, plan = load_and_plan(name)
    kinds = [protocol.instruments.potentiostat.model, "gif", "tem"]
    t0 = time.monotonic()
    with start_servers(protocol, kinds, time_scale=time_scale) as servers:
        argv = ["run", name, "--hardware", "--time-scale", repr(time_scale), "--out", str(out), "--no-progress",
                "--no-figures", "--status-every", "0"]
        for role, resource in servers.resources.items():
            argv += ["--resource", f"{role}={resource}"]
        status = main(argv)
        wall_s = time.monotonic() - t0
        smu = servers.smu
        from insitem.acquisition.runfile_read import RunFileReader

        with RunFileReader(out) as r:
            serials = {role: ident.serial for role, ident in r.instruments.items()}
        return PacedRun(
            name=name,
            time_scale=time_scale,
            plan=plan,
            status=status,
            path=out,
            wall_s=wall_s,
            output_on=None if smu is None else bool(smu.output_on),
            beam_blanked=bool(servers.servers["tem"].microscope.beam.blanked),
            applied_V=servers.world.applied_V,
            frames_acquired=len(servers.servers["gif"].acquisitions),
            identity_serials=serials,
        )
