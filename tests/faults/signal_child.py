"""Child process of the signal cells: `insitem run ...` that signals itself at one moment.

    python signal_child.py MOMENT SIGNAL insitem-run-arguments...

The signal is sent with `os.kill(os.getpid(), SIG)` from a hook at the moment - the kernel
delivers it as it would a Ctrl-C or `kill`, and Python runs the handler the CLI installed at the
next bytecode of the main thread (or kills the process, for SIGKILL). Hooks (each fires once):

* configuration - as the Keithley's configure commands are built, inside `Runner._setup`;
* mid-CV step   - from a timer thread 50 ms into a potentiostat sweep or reading made between
                  exposures, after the first exposure (the main thread waits in a socket read);
* mid-exposure  - from a timer thread 0.1 s after the second exposure started (beam on);
* frame readout - as the second frame's read-out starts (`GifCamera._receive_image`);
* file write    - inside the second exposure's record write, between growing the table and
                  filling the new row.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from insitem.acquisition import runfile as runfile_module
from insitem.cli.main import main
from insitem.acquisition.runner import Runner
from insitem.drivers.gif.camera import GifCamera
from insitem.drivers.keithley.k2450 import Keithley2450

moment, signame, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
SIG = getattr(signal, signame)
fired = [False]
runners: list[Runner] = []


def fire(delay_s: float = 0.0) -> None:
    if fired[0]:
        return
    fired[0] = True
    if delay_s:
        threading.Timer(delay_s, os.kill, (os.getpid(), SIG)).start()
    else:
        os.kill(os.getpid(), SIG)


_init = Runner.__init__


def _runner_init(self: Runner, *a: Any, **k: Any) -> None:
    _init(self, *a, **k)
    runners.append(self)


Runner.__init__ = _runner_init  # type: ignore[method-assign]

if moment == "configuration":
    _lines = Keithley2450.configure_lines

    def configure_lines(self: Keithley2450, config: Any) -> list[str]:
        fire()
        return _lines(self, config)

    Keithley2450.configure_lines = configure_lines  # type: ignore[method-assign]

elif moment == "mid-CV step":

    def _between_exposures() -> bool:
        r = runners[-1] if runners else None
        return r is not None and r._exposures >= 1 and r._exposure_readings is None

    for name in ("run_sweep", "measure"):
        orig = getattr(Keithley2450, name)

        def wrapped(self: Keithley2450, *a: Any, _orig: Any = orig, **k: Any) -> Any:
            if _between_exposures():
                fire(0.05)
            return _orig(self, *a, **k)

        setattr(Keithley2450, name, wrapped)

elif moment == "mid-exposure":
    _start = GifCamera._start_exposure
    started = [0]

    def start_exposure(self: GifCamera) -> float:
        t = _start(self)
        started[0] += 1
        if started[0] == 2:
            fire(0.1)
        return t

    GifCamera._start_exposure = start_exposure  # type: ignore[method-assign]

elif moment == "frame readout":
    _receive = GifCamera._receive_image
    images = [0]

    def receive_image(self: GifCamera, *a: Any, **k: Any) -> Any:
        images[0] += 1
        if images[0] == 2:
            fire()
        return _receive(self, *a, **k)

    GifCamera._receive_image = receive_image  # type: ignore[method-assign]

elif moment == "file write":
    _append_exposure = runfile_module.RunFile.append_exposure
    _append_rows = runfile_module._append_rows
    writing = [0]

    def _pending_signal_point() -> None:
        pass

    def append_exposure(self: Any, *a: Any, **k: Any) -> int:
        writing[0] += 1
        try:
            return _append_exposure(self, *a, **k)
        finally:
            writing[0] -= 1

    def append_rows(ds: Any, rows: Any) -> int:
        if writing[0] and ds.name == "/insitem/exposures" and ds.shape[0] == 1:
            n = ds.shape[0]
            ds.resize((n + rows.shape[0],))
            fire()
            _pending_signal_point()  # a Python call: the handler runs here, before the row is filled
            ds[n:] = rows
            return n
        return _append_rows(ds, rows)

    runfile_module.RunFile.append_exposure = append_exposure  # type: ignore[method-assign]
    runfile_module._append_rows = append_rows

else:
    raise SystemExit(f"unknown moment {moment!r}")

sys.exit(main(argv))
