"""`insitem serve --protocol NAME` with no instrument list serves what the protocol declares."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest


@pytest.mark.wire
@pytest.mark.parametrize(("protocol", "idn"), [("micro-battery-lagp", "MODEL 2450"), ("in-situ-lasgtp", "MODEL 2400")])
def test_serve_takes_the_instruments_from_the_protocol(protocol: str, idn: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "insitem.cli", "serve", "--protocol", protocol],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 120  # generous: start-up on a loaded machine
        while len(lines) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            role, _, res = line.strip().partition("=")
            lines[role] = res
        assert set(lines) == {"potentiostat", "camera", "microscope"}, lines
        host, port = lines["potentiostat"].split("::")[1:3]
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"*IDN?\n")
            reply = s.makefile().readline()
        assert idn in reply
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert f"insitem run {protocol} --hardware --resource potentiostat=" in err
