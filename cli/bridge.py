"""`insitem bridge tem --vendor temscript|pyjem`: the TEM bridge (drivers/tem/bridge.py) as a
command on the microscope PC, until a stop signal."""

from __future__ import annotations

import errno
import logging
import sys
import threading
from typing import Any

from insitem.drivers.tem import bridge
from insitem.drivers.tem.bridge import load_mag_table
from insitem.drivers.tem.session import TokenError, check_bind, load_token

_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})

#: the Python package each vendor adapter needs on the microscope PC
VENDOR_PACKAGES = {"temscript": "temscript", "pyjem": "PyJEM"}

#: signals that end the bridge cleanly (blanking a leased beam first), where the OS has them
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")


def _log_to_stderr() -> None:
    """The lease keeper's lines (beam blanked / NOT confirmed) on stderr, once."""
    logger = logging.getLogger("insitem.tem")
    if not any(getattr(h, "_insitem_bridge", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler._insitem_bridge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def bridge_command(args: Any) -> int:
    """`insitem bridge tem --vendor temscript|pyjem [--bind HOST] [--port N] [--mag-table FILE]
    [--token-file FILE]`.

    Checks the token (``--token-file``, else $INSITEM_BRIDGE_TOKEN_FILE, else
    $INSITEM_BRIDGE_TOKEN; required beyond loopback), the magnification table and that the
    vendor package imports (it exists only on the microscope PC), then runs `serve_bridge`
    until Ctrl-C, SIGTERM, SIGHUP (or Ctrl-Break on Windows) and returns 0 - a beam a client
    leased is blanked and read back first. Bad arguments, a missing vendor package or a port
    that cannot be bound are one line on stderr and exit 2; an adapter that cannot reach the
    microscope exits 1 (a device fault).
    """
    import importlib
    import signal

    vendor = str(args.vendor).lower()
    package = VENDOR_PACKAGES.get(vendor)
    if package is None:
        print(f"insitem bridge: unknown vendor {args.vendor!r}; expected temscript or pyjem", file=sys.stderr)
        return 2
    try:
        token = load_token(getattr(args, "token_file", None))
        check_bind(args.bind, token)
    except (TokenError, ValueError) as exc:
        print(f"insitem bridge: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {}
    if getattr(args, "mag_table", None):
        try:
            options["mag_table"] = load_mag_table(args.mag_table)
        except ValueError as exc:
            print(f"insitem bridge: --mag-table: {exc}", file=sys.stderr)
            return 2
    try:
        importlib.import_module(package)
    except ImportError as exc:
        print(
            f"insitem bridge: vendor package {package!r} is not importable here ({exc.__class__.__name__}); "
            f"run the bridge on the microscope PC where {package} is installed",
            file=sys.stderr,
        )
        return 2
    _log_to_stderr()

    stopping = [False]

    def _on_stop_signal(signum: int, frame: Any) -> None:
        if stopping[0]:
            return  # a second signal must not interrupt the blank in progress
        stopping[0] = True
        raise KeyboardInterrupt  # serve_bridge blanks a leased beam and stops cleanly on it

    main_thread = threading.current_thread() is threading.main_thread()
    old: dict[int, Any] = {}
    if main_thread:
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                old[signum] = signal.signal(signum, _on_stop_signal)
    try:
        bridge.serve_bridge(vendor, args.bind, int(args.port), adapter_options=options, token=token)
    except OSError as exc:
        if exc.errno not in _BIND_ERRNOS:  # raised by the vendor API at start-up, not by bind()
            print(f"insitem bridge: {vendor} adapter failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"insitem bridge: cannot listen on {args.bind} port {args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - the vendor API failing at start-up: one line, no traceback
        print(f"insitem bridge: {vendor} adapter failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
    return 0
