"""Fault matrix, run files: a full disk mid-run, and damaged or foreign files given to the commands.

Disk full: the run's file lives on a small tmpfs when this process may mount one (root), else
under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with EFBIG, as on a
full disk). The run must end with one line naming the full disk, exit 1, no traceback, no HDF5
dump, no SIGSEGV/SIGBUS; every exposure the file counts has its image written; `--resume` with
room again finishes the run. With the free-space check turned off, HDF5 itself hits the wall (the
fallback path): still one line, a clean exit, and nothing counted that was not written.

Damaged files (truncations at 12 offsets, bit flips, header flips, foreign and odd files, a file
created without its protocol, a file without write permission): `insitem show`, `insitem analyze`
and `insitem run --resume` answer with one line and exit 2, no traceback, within a timeout.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np
import pytest
from faultkit import instruments_safe, resource_args, serve, write_protocol

from insitem.cli.main import main
from insitem.acquisition.runfile import lookup3_checksum
from insitem.acquisition.runfile_read import RunFileReader

pytestmark = [pytest.mark.faults]

#: child: the real CLI, optionally under a file-size limit and without the free-space check
CHILD = """\
import resource, signal, sys
limit, check = int(sys.argv[1]), sys.argv[2] == "1"
if limit > 0:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
import insitem.acquisition.runfile as runfile
runfile.SPACE_CHECK = check
from insitem.cli.main import main
sys.exit(main(sys.argv[3:]))
"""
NOISE = ("Traceback", "Exception ignored", "HDF5-DIAG", "Segmentation", "core dumped")


def _cli(argv: list[str], *, limit: int = 0, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, str(limit), "1" if check else "0", *argv],
                          capture_output=True, text=True, timeout=timeout)


def _assert_clean(proc: subprocess.CompletedProcess[str], code: int) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text  # a negative code is a signal (SIGSEGV -11, SIGBUS -7)
    for word in NOISE:
        assert word not in text, text


def _images_written(path: Path) -> tuple[str, int, int]:
    """(status, exposures counted, records); every counted image finite and non-zero."""
    with RunFileReader(path) as r:
        n = r.n_exposures("li-k")
        rec = r.exposure_records("li-k")
        for i in range(n):
            img = r.exposure("li-k", i)
            assert np.isfinite(img).all() and img.mean() > 0
        return r.status, n, len(rec["t_start_s"])


# ---------------------------------------------------------------------------------------------
# disk full


def _can_mount_tmpfs(where: Path) -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(where)], capture_output=True)
    return ok


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], tuple[Path, int]]]:
    """`small_disk(n_bytes)` -> (folder for the run file, file-size limit to give the child).

    A tmpfs of `n_bytes` when one can be mounted (limit 0), else a plain folder and the limit."""
    mounted: list[Path] = []
    use_tmpfs = _can_mount_tmpfs(tmp_path / "probe")

    def make(n_bytes: int) -> tuple[Path, int]:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if use_tmpfs:
            pages = -(-n_bytes // 4096) * 4096
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages}", "tmpfs", str(folder)], check=True)
            mounted.append(folder)
            return folder, 0
        return folder, n_bytes

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# the dry run of loopback-hold writes ~1.3 MB (3 images); 1.4 MB fills up after the first image,
# with the 1 MiB closing reserve (runfile.DISK_RESERVE_BYTES)
DRY_DISK_BYTES = 1_400_000


@pytest.mark.slow
def test_disk_full_mid_run_dry(small_disk: Callable[[int], tuple[Path, int]], tmp_path: Path) -> None:
    folder, limit = small_disk(DRY_DISK_BYTES)
    out = folder / "run.h5"
    proc = _cli(["run", "loopback-hold", "--out", str(out), "--no-progress", "--no-figures"], limit=limit)
    _assert_clean(proc, 1)
    summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("run failed")]
    assert len(summary) == 1 and "disk full" in summary[0], proc.stderr
    status, n_before, records = _images_written(out)
    assert status == "failed" and 1 <= n_before < 3 and records == n_before
    # with room again, --resume finishes the run (the interrupted hold again, 3 images): every
    # image written, each counted once
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    for f in folder.iterdir():
        shutil.copy(f, roomy / f.name)
    proc = _cli(["run", "--resume", str(roomy / "run.h5"), "--no-progress", "--no-figures"])
    _assert_clean(proc, 0)
    status, n, records = _images_written(roomy / "run.h5")
    assert status == "completed" and n == records == n_before + 3


@pytest.mark.slow
def test_disk_full_without_the_free_space_check_hdf5_fails_cleanly(tmp_path: Path) -> None:
    """The fallback: HDF5's own write fails (file-size limit, free-space check off)."""
    out = tmp_path / "run.h5"
    proc = _cli(["run", "loopback-hold", "--out", str(out), "--no-progress", "--no-figures"], limit=1_200_000, check=False)
    _assert_clean(proc, 1)
    assert "File too large" in proc.stdout + proc.stderr
    status, n, records = _images_written(out)
    assert status == "running" and n <= records  # abandoned as its last flush left it
    # --resume refuses a file cut short by a failed write, in one line
    proc = _cli(["run", "--resume", str(out), "--no-progress", "--no-figures"])
    _assert_clean(proc, 2)
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot be continued" in proc.stderr


@pytest.mark.slow
@pytest.mark.wire
def test_disk_full_mid_run_hardware(small_disk: Callable[[int], tuple[Path, int]], tmp_path: Path) -> None:
    protocol_path = write_protocol(tmp_path)
    # the fault-matrix protocol's images are small (4 x 4 binned): the closing reserve plus a
    # little more than the laid-out file fills up during the run
    folder, limit = small_disk(1_048_576 + 150_000)
    out = folder / "run.h5"
    with serve(protocol_path) as servers:
        proc = _cli(["run", str(protocol_path), "--hardware", "--out", str(out), *resource_args(servers),
                     "--no-progress", "--no-figures"], limit=limit)
        off, blanked = instruments_safe(servers)
    _assert_clean(proc, 1)
    assert "disk full" in proc.stderr, proc.stderr
    assert off and blanked
    status, n, records = _images_written(out)
    assert status == "failed" and n == records


# ---------------------------------------------------------------------------------------------
# damaged and foreign files


def _set_flags(data: bytearray, flags: int) -> None:
    """Mark a superblock (version 3) open for write, as a killed writer leaves it."""
    data[11] = flags
    n = 12 + 4 * 8
    data[n : n + 4] = struct.pack("<I", lookup3_checksum(bytes(data[:n])))


def _flip(data: bytes, seed: int, n_bits: int, limit: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(n_bits):
        i = rng.randrange(min(limit, len(out)))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Damaged and odd files made from one dry run of loopback-hold."""
    root = tmp_path_factory.mktemp("corpus")
    base = root / "base.h5"
    assert main(["run", "loopback-hold", "--out", str(base), "--no-progress", "--no-figures"]) == 0
    good = base.read_bytes()
    crashed = bytearray(good)
    _set_flags(crashed, 0x05)  # what SIGKILL leaves: open for write + SWMR write
    files: dict[str, bytes] = {}
    size = len(good)
    for at in (0, 7, 100, 512, 2048, 4096, 20_000, size // 4, size // 2, (3 * size) // 4, size - 4096, size - 1):
        files[f"truncated-{at}"] = good[:at]
    for at in (512, 20_000, size // 2):
        files[f"crashed-truncated-{at}"] = bytes(crashed[:at])
    for seed in range(6):
        files[f"bitflips-{seed}"] = _flip(good, seed, 20, 20_000)
    for seed in range(3):
        files[f"crashed-bitflips-{seed}"] = _flip(bytes(crashed), seed, 20, 20_000)
    for name, offset in (("signature", 1), ("version", 8), ("offset-size", 9), ("flags", 11), ("root-address", 44)):
        files[f"header-{name}"] = _flip(good[:offset] + bytes([good[offset] ^ 0x10]) + good[offset + 1 :], 0, 0, 1)
    files["text"] = b"time,voltage\n0,0.1\n1,0.2\n"
    files["png"] = b"\x89PNG\r\n\x1a\n" + bytes(200)
    paths = {name: root / f"{name}.h5" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    with h5py.File(root / "foreign.h5", "w") as f:
        f["x"] = np.arange(10)
    paths["foreign-hdf5"] = root / "foreign.h5"
    with h5py.File(root / "hyperspy.h5", "w") as f:
        f.attrs["file_format"] = "HyperSpy"
        f.create_group("Experiments/s").create_dataset("data", data=np.zeros((2, 3)))
    paths["hyperspy-not-a-run"] = root / "hyperspy.h5"
    noprot = root / "no-protocol.h5"
    shutil.copy(base, noprot)
    with h5py.File(noprot, "r+") as f:
        del f["insitem/protocol"]  # what a signal during file creation left before creation was atomic
    paths["no-protocol"] = noprot
    (root / "folder.h5").mkdir()
    paths["a-folder"] = root / "folder.h5"
    return paths


COMMANDS = {
    "show": lambda p: ["show", str(p), "--out", str(p.parent / (p.stem + "-fig"))],
    "analyze": lambda p: ["analyze", str(p), "--out", str(p.parent / (p.stem + "-an"))],
    "resume": lambda p: ["run", "--resume", str(p), "--no-progress", "--no-figures"],
}
NAMES = (
    [f"truncated-{k}" for k in range(12)] + [f"crashed-truncated-{k}" for k in range(3)]
    + [f"bitflips-{k}" for k in range(6)] + [f"crashed-bitflips-{k}" for k in range(3)]
    + ["header-signature", "header-version", "header-offset-size", "header-flags", "header-root-address",
       "text", "png", "foreign-hdf5", "hyperspy-not-a-run", "no-protocol", "a-folder"]
)


def _resolve(corpus: dict[str, Path], name: str) -> Path:
    if name.startswith(("truncated-", "crashed-truncated-")):
        prefix, k = name.rsplit("-", 1)
        keys = [key for key in corpus if key.rsplit("-", 1)[0] == prefix]
        return corpus[keys[int(k)]]
    return corpus[name]


# bit flips can land in bytes nothing checks (a string, unused space): the file then still reads
MAY_STILL_READ = ("bitflips-", "crashed-bitflips-")


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", NAMES)
def test_damaged_file_is_one_line_and_exit_2(corpus: dict[str, Path], name: str, command: str,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    path = _resolve(corpus, name)
    code = main(COMMANDS[command](path))
    out, err = capfd.readouterr()
    for word in NOISE:
        assert word not in out + err, out + err
    if code != 2:
        # only a bit flip nothing checks may leave a file that still reads (show/analyze) or runs;
        # a file without its protocol still holds its data (show), but cannot be continued; a
        # crashed file cut short is read as a full disk leaves it (the images stored inside it,
        # acquisition/h5open.short_by) when the cut spares the metadata, and is never continued
        still_reads = (name.startswith(MAY_STILL_READ) or (name == "no-protocol" and command != "resume")
                       or (name.startswith("crashed-truncated-") and command != "resume"))
        assert still_reads and code in (0, 2), (code, out, err)
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert path.name in lines[0]
    if name == "no-protocol" and command == "resume":
        assert "holds no protocol" in lines[0]


def test_bit_flips_in_metadata_are_mostly_caught(corpus: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    """Bit flips in the first 20 kB (object headers, B-trees, the declaration): HDF5's checksums
    and the layout check catch them; `show` must not pass over most of them silently."""
    caught = sum(main(COMMANDS["show"](corpus[f"bitflips-{k}"])) == 2 for k in range(6))
    capfd.readouterr()
    assert caught >= 4


def test_resume_without_write_permission_is_one_line(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A stopped run file the user may read but not write. Root ignores permission bits: as root
    the file is offered through a read-only bind mount instead (EROFS), when mounting works."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "run.h5"
    shutil.copy(corpus["text"].parent / "base.h5", path)
    with h5py.File(path, "r+") as f:  # a stopped run, so that it could be continued
        f.attrs.modify("status", np.bytes_(b"stopped"))
    os.chmod(path, 0o444)
    view = folder
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        view = tmp_path / "ro-view"
        view.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True).returncode != 0:
            pytest.skip("running as root (permission bits do not apply) and no read-only bind mount")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "insitem.cli", "run", "--resume", str(view / "run.h5"),
                               "--no-progress", "--no-figures"], capture_output=True, text=True, timeout=120)
    finally:
        if view != folder:
            subprocess.run(["umount", str(view)], capture_output=True)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "no permission to write" in proc.stderr or "Read-only file system" in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["truncated-3", "crashed-truncated-1", "crashed-bitflips-0", "header-version", "png"])
def test_damaged_file_through_the_real_command_answers_in_time(corpus: dict[str, Path], name: str) -> None:
    """A fresh process per command (as a user runs it), under a generous timeout: `truncate -s 512`
    used to sleep for hours in h5o.open under SWMR."""
    path = _resolve(corpus, name)
    for command, argv in COMMANDS.items():
        proc = subprocess.run([sys.executable, "-m", "insitem.cli", *argv(path)],
                              capture_output=True, text=True, timeout=120)
        _assert_clean(proc, 2)
        assert len(proc.stderr.strip().splitlines()) == 1, (command, proc.stderr)

