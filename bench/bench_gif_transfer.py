"""GIF camera transfer speed: a full 2048 x 2048 uint16 frame from the emulated SerialEMCCD server
through GifCamera's read path on loopback. Target: >= 100 MB/s (median).

Run: .venv/bin/python bench/bench_gif_transfer.py [--repeats N]

Measured in one run, so the ratios compare like with like on a shared machine:
* driver, plain socket (gif://): start_exposure + read_frame, i.e. SetReadMode, SelectCamera,
  GetAcquiredImage request, 24-byte header, 8 MiB of pixels (one chunk);
* the same with 1 MiB superchunks (8 chunks, 7 handshakes);
* driver over pyvisa-py (TCPIP0::...::SOCKET);
* baseline: a bare socket that sends the request and recv_into's the reply (no driver);
* small-call round trip (GetDMVersion) latency.
MB = 1e6 bytes.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import time
from typing import Callable

import numpy as np

from insitem.drivers.gif import GifCamera, GifCameraConfig
from insitem.drivers.gif import protocol as P
from insitem.drivers.interfaces import Camera, CameraSettings, Frame, InstrumentIdentity
from insitem.simulators.emulators.gif import GifEmulator

SHAPE = (2048, 2048)
FRAME_BYTES = SHAPE[0] * SHAPE[1] * 2


class FixedCamera(Camera):
    """Backend that hands out one precomputed frame, so only the transfer is timed."""

    sensor_shape = SHAPE

    def __init__(self) -> None:
        super().__init__()
        self.data = np.random.default_rng(0).integers(0, 65535, SHAPE, dtype=np.uint16)

    def identify(self) -> InstrumentIdentity:
        return InstrumentIdentity("bench", "FixedCamera")

    def _configure(self, settings: CameraSettings) -> None:
        pass

    def _start_exposure(self) -> float:
        return 0.0

    def read_frame(self) -> Frame:
        assert self.settings is not None
        return Frame(self.data, 0.0, self.settings)

    def dark_reference(self, exposure_s: float, n_frames: int = 10) -> np.ndarray:
        return np.zeros(SHAPE, np.float32)

    def gain_reference(self) -> np.ndarray:
        return np.ones(SHAPE, np.float32)


def driver_case(resource: str, backend: FixedCamera) -> tuple[Callable[[], float], Callable[[], None]]:
    cam = GifCamera(GifCameraConfig(resource=resource, sensor_shape=SHAPE, set_energy_on_configure=False))
    cam.configure(CameraSettings(exposure_s=0.001))

    def once() -> float:
        t = time.perf_counter()
        cam.start_exposure()
        frame = cam.read_frame()
        dt = time.perf_counter() - t
        assert frame.data[-1, -1] == backend.data[-1, -1]
        return dt

    once()  # connect outside the timing
    return once, cam.close


def bare_case(emu: GifEmulator) -> tuple[Callable[[], float], Callable[[], None]]:
    request = P.pack_request(P.Fn.GetAcquiredImage, (SHAPE[0] * SHAPE[1], SHAPE[1], SHAPE[0], 0, 1, 0, 0,
                                                     SHAPE[0], SHAPE[1], -1, 0, 0, -1), (), (0.001, 0.0))
    buf = bytearray(FRAME_BYTES)
    view = memoryview(buf)
    s = socket.create_connection((emu.host, emu.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def once() -> float:
        t = time.perf_counter()
        s.sendall(request)
        header = s.recv(24, socket.MSG_WAITALL)
        assert struct.unpack("<6i", header)[5] == 1
        got = 0
        while got < FRAME_BYTES:
            got += s.recv_into(view[got:], FRAME_BYTES - got)
        return time.perf_counter() - t

    once()
    return once, s.close


def time_small_call(resource: str, repeats: int) -> list[float]:
    cam = GifCamera(GifCameraConfig(resource=resource))
    cam.call(P.Fn.GetDMVersion)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        cam.call(P.Fn.GetDMVersion)
        out.append(time.perf_counter() - t)
    cam.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    n = args.repeats
    backend = FixedCamera()
    # one emulator per case (one client per server, gs §1); cases interleaved within each repeat so
    # that load from other processes hits them alike and the ratios stay meaningful
    emus = {name: GifEmulator(backend, superchunk_bytes=(1 << 20) if "8 chunks" in name else P.SUPERCHUNK_BYTES).start()
            for name in CASES}
    try:
        cases = {
            CASES[0]: bare_case(emus[CASES[0]]),
            CASES[1]: driver_case(emus[CASES[1]].resource, backend),
            CASES[2]: driver_case(emus[CASES[2]].resource, backend),
            CASES[3]: driver_case(emus[CASES[3]].visa_resource, backend),
        }
        times: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(n):
            for name, (once, _close) in cases.items():
                times[name].append(once())
        for _once, close in cases.values():
            close()
        rtt = statistics.median(time_small_call(emus[CASES[1]].resource, 200))
    finally:
        for emu in emus.values():
            emu.stop()
    rates = {name: FRAME_BYTES / statistics.median(t) / 1e6 for name, t in times.items()}
    print(f"GIF frame transfer, 2048x2048 uint16 ({FRAME_BYTES} B), median of {n} repeats, loopback")
    for name, rate in rates.items():
        print(f"  {name:38s} {rate:8.1f} MB/s   ratio to bare socket {rate / rates[CASES[0]]:.2f}")
    print(f"  GetDMVersion round trip (driver)       {rtt * 1e6:8.1f} us (median of 200)")
    ok = rates[CASES[1]] >= 100
    print(f"target >= 100 MB/s through the driver: {'PASS' if ok else 'FAIL'}")


CASES = (
    "bare socket (baseline)",
    "driver, gif:// socket, 1 chunk",
    "driver, gif:// socket, 8 chunks",
    "driver, pyvisa-py SOCKET, 1 chunk",
)


if __name__ == "__main__":
    main()
