"""`insitem serve [INSTRUMENT ...] [--protocol NAME]`: emulated instruments over one simulated
world (simulators/serve.py), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import types

from insitem.drivers.errors import ProtocolError, ResourceError
from insitem.simulators.serve import start_servers


def serve_command(args: argparse.Namespace) -> int:
    """`insitem serve ...`: start the servers, print the resources, serve until Ctrl-C/SIGTERM.

    Exit 0 after a clean stop; bad input (unknown protocol, port taken) is one line on stderr
    and exit 2.
    """
    kinds = list(args.instruments)
    if not kinds:  # the instruments the protocol declares: no hand-matching of models and worlds
        from insitem.protocols.loader import load

        kinds = [load(args.protocol).instruments.potentiostat.model, "gif", "tem"]
    try:
        time_scale = float(getattr(args, "time_scale", 1.0))
        servers = start_servers(
            args.protocol, kinds, bind=args.bind, port=args.port, serial=bool(getattr(args, "serial", False)),
            time_scale=time_scale,
        )
    except OSError as exc:
        raise ResourceError(f"cannot listen on {args.bind} port {args.port}: {exc.strerror or exc}") from None
    except ProtocolError:
        raise
    stop = threading.Event()

    def _on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        preset = servers.protocol.sample.preset if servers.protocol else "?"
        pace = f", {time_scale:.12g} simulated s per wall s" if time_scale != 1.0 else ""
        print(f"# insitem serve: {', '.join(servers.servers)} over one simulated world "
              f"(protocol {args.protocol}, sample preset {preset}{pace}); Ctrl-C stops", file=sys.stderr, flush=True)
        for line in servers.lines():
            print(line, flush=True)
        resources = " ".join(f"--resource {line}" for line in servers.lines() if not line.startswith("#"))
        scale = f" --time-scale {time_scale:.12g}" if time_scale != 1.0 else ""
        print(f"# then: insitem run {args.protocol} --hardware{scale} {resources}", file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        servers.stop()
    print("# insitem serve: stopped", file=sys.stderr, flush=True)
    return 0
