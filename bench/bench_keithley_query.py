"""Query cost through the insitem Keithley drivers vs a raw pyvisa query of the same command.

Both talk to the same emulated instrument (virtual clock: the emulator spends no real time
integrating) over pyvisa-py `TCPIP::127.0.0.1::PORT::SOCKET` with read_termination "\\n".
Measured in the same run, interleaved in rounds so machine load hits both alike.
Target: driver / raw <= 1.2 (median per query).

    .venv/bin/python bench/bench_keithley_query.py [--n 50] [--rounds 31]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyvisa

from insitem.drivers.clock import VirtualClock
from insitem.drivers.interfaces import PotentiostatConfig
from insitem.drivers.keithley import Keithley2400, Keithley2450
from insitem.simulators.emulators import LineServer
from insitem.simulators.emulators.keithley2400 import Keithley2400Emulator
from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
from insitem.simulators.emulators.smu import ResistorLoad


def per_query_s(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def bench(model: str, n: int, rounds: int) -> None:
    clock = VirtualClock()
    emu_cls, drv_cls = (Keithley2400Emulator, Keithley2400) if model == "2400" else (Keithley2450Emulator, Keithley2450)
    with LineServer(emu_cls(ResistorLoad(1e4), clock)) as server:
        resource = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
        drv = drv_cls(resource, clock=clock)
        drv.reset()
        drv.configure(PotentiostatConfig(compliance_A=1e-3, nplc=0.01))
        drv.set_voltage(0.5)
        drv.set_output(True)
        rm = pyvisa.ResourceManager("@py")
        raw = rm.open_resource(resource, read_termination="\n", write_termination="\n")
        read_cmd = ":READ?" if model == "2400" else Keithley2450.READ_QUERY
        cases = {
            "measure() vs raw query(READ)": (drv.measure, lambda: raw.query(read_cmd)),
            "output_enabled vs raw query(:OUTP?)": (lambda: drv.output_enabled, lambda: raw.query(":OUTP?")),
        }
        for name, (ours, theirs) in cases.items():
            for _ in range(50):  # warm up both paths
                ours(), theirs()
            t_ours, t_raw = [], []
            for _ in range(rounds):
                t_raw.append(per_query_s(theirs, n))
                t_ours.append(per_query_s(ours, n))
            mo, mr = statistics.median(t_ours), statistics.median(t_raw)
            print(f"{model} {name:40s} driver {mo * 1e6:8.1f} us  raw pyvisa {mr * 1e6:8.1f} us  ratio {mo / mr:5.3f}")
        drv.safe_state()
        drv.close()
        raw.close()
        rm.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50, help="queries per round")
    ap.add_argument("--rounds", type=int, default=31, help="rounds (median taken over rounds)")
    args = ap.parse_args()
    for model in ("2400", "2450"):
        bench(model, args.n, args.rounds)


if __name__ == "__main__":
    main()
