"""The Windows proxy: the bridge and a dry run with the POSIX-only modules hidden.

Microscope PCs run Windows, where `termios`, `tty`, `pty`, `fcntl` and `resource` do not exist.
A subprocess hides them (``sys.modules[name] = None`` makes every import of them fail, as on
Windows), then imports the bridge, starts it on port 0 against the temscript-shaped fake, drives
it through the real client (unblank with a lease, magnification from a table file, blank on
stop), checks that the pseudo-terminal server says clearly that it needs POSIX, and runs the
shortest shipped protocol as a dry run through the CLI's main().
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

FAKE_VENDOR = Path(__file__).parent / "fakevendor"

SCRIPT = textwrap.dedent(
    """
    import sys
    POSIX_ONLY = ("termios", "tty", "pty", "fcntl", "resource")
    for name in POSIX_ONLY:
        sys.modules[name] = None
    for name in POSIX_ONLY:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} still importable")

    out = sys.argv[1]
    import temscript  # the fake, from PYTHONPATH
    from insitem.drivers.tem.bridge import TemscriptAdapter, TemServer, load_mag_table
    from insitem.drivers.tem.client import TemMicroscope

    fake = temscript.Microscope()
    with open(out + "/mags.csv", "w") as f:
        f.write("index,magnification\\n1,10000\\n2,20000\\n")
    server = TemServer(TemscriptAdapter(fake, mag_table=load_mag_table(out + "/mags.csv"))).start()
    scope = TemMicroscope(server.resource, lease_s=30.0)
    assert scope.identify().model == "TEM bridge temscript NULL"
    scope.lens.set_magnification(20000.0)
    assert scope.lens.magnification == 20000.0
    scope.beam.set_blanked(False)
    assert fake.get_beam_blanked() is False
    server.stop()  # shutdown while unblanked: the bridge blanks
    assert fake.get_beam_blanked() is True
    scope.close()
    print("bridge ok", flush=True)

    from insitem.drivers.lineserver import PtyServer
    try:
        PtyServer(None)
    except RuntimeError as exc:
        assert "POSIX" in str(exc), exc
        print("pty refused clearly", flush=True)

    from insitem.cli.main import main
    code = main(["run", "loopback-hold", "--sim", "--out", out, "--no-progress", "--no-figures"])
    print(f"dry run exit {code}", flush=True)
    raise SystemExit(code)
    """
)


def test_bridge_and_dry_run_without_posix_only_modules(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FAKE_VENDOR), os.environ.get("PYTHONPATH", "")]))
    env.pop("INSITEM_BRIDGE_TOKEN", None)
    env.pop("INSITEM_BRIDGE_TOKEN_FILE", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bridge ok" in proc.stdout and "pty refused clearly" in proc.stdout and "dry run exit 0" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(list(tmp_path.glob("loopback-hold-*.h5"))) == 1
