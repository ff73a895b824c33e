"""TEM command-set round trips: TemMicroscope against the emulator on loopback TCP and on a pty.

Prints the median time of a read-back query (BEAM:BLAN?), of a blank with read-back
(BEAM:BLAN 1;:BEAM:BLAN?) and of a checked set (SLIT:WIDT ...;:SYST:ERR?), and the ratio of
the blank to the bare query measured in the same run. Also the in-process cost of the dose
integral (MicroscopeState.dose_e_per_m2 over a record of 10,000 blank cycles).

Run: .venv/bin/python bench/tem_roundtrip.py
"""

from __future__ import annotations

import statistics
import time

from insitem.drivers.clock import VirtualClock
from insitem.drivers.tem.client import TemMicroscope
from insitem.simulators.emulators.tem import TemEmulator, TemInstrument
from insitem.simulators.microscope import SimMicroscope
from insitem.simulators.optics import MicroscopeState

REPEATS = 7
N = 200


def median_s(fn, n: int = N) -> float:  # noqa: ANN001
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def main() -> None:
    for serial in (False, True):
        with TemEmulator(serial=serial) as emu:
            mic = TemMicroscope(emu.resource)
            q = median_s(lambda: mic.beam.blanked)
            b = median_s(lambda: mic.beam.set_blanked(True))
            s = median_s(lambda: mic.slit.set_width(2e-7))
            mic.close()
        kind = "pty (pyserial)" if serial else "TCP (pyvisa-py SOCKET)"
        print(f"{kind:24s} query {q * 1e3:.3f} ms  blank+readback {b * 1e3:.3f} ms  "
              f"checked set {s * 1e3:.3f} ms  blank/query {b / q:.2f}")

    clock = VirtualClock()
    st = MicroscopeState(clock=clock)
    for _ in range(10_000):
        st.set_blanked(False)
        clock.advance(30.0)
        st.set_blanked(True)
        clock.advance(60.0)
    d = median_s(lambda: st.dose_e_per_m2(1234.5, 777_777.0), n=2000)
    print(f"dose integral over 10,000 blank cycles: {d * 1e6:.2f} us per call")


if __name__ == "__main__":
    main()
