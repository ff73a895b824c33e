"""Opening an HDF5 file that may be damaged, foreign or still being written, without hanging.

HDF5 opened read-only in SWMR mode retries every metadata read whose checksum fails, with an
exponential back-off capped at one hour, 100 times by default (the SWMR reader's defence against
reading a block while the writer rewrites it). On a damaged file - a truncation, a flipped bit in
an object header - that is a sleep of hours inside ``h5o.open``. A plain (non-SWMR) read-only open
fails at once, but refuses a file whose superblock still says "open for write" (a live run, or one
whose writer was killed). So (docs/decisions/0017-damaged-run-files-and-full-disks.md):

1. The superblock is read and checked here first, in Python: the HDF5 signature, the superblock
   checksum (versions 2 and 3), and the file size against the end-of-file address the superblock
   records (a shorter file is truncated; a live SWMR writer updates that address at every flush,
   measured equal to the file size after each one).
2. A file whose open-for-write flags are clear is opened the plain way: every check HDF5 has, no
   retries.
3. A file with the flags set is opened in SWMR mode with the metadata read attempts cut from 100
   to `SWMR_READ_ATTEMPTS` (h5py does not expose ``H5Pset_metadata_read_attempts``; it is called
   through ctypes on the HDF5 library h5py itself loaded): a damaged block is reported after
   0.02-0.06 s (measured) instead of hours, and a reader racing a writer's flush still re-reads.

Everything that goes wrong is a `RunFileUnreadable` with one line naming the file and the problem.
"""

from __future__ import annotations

import ctypes
import glob
import os
import struct
import time
from pathlib import Path
from typing import Any, Callable

import h5py
from h5py import h5f, h5p

from insitem.acquisition.h5checksum import lookup3_checksum
from insitem.acquisition.runfile_errors import RunFileUnreadable

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: metadata read attempts of a SWMR read (HDF5's default, 100, with its back-off capped at an
#: hour, sleeps for hours on a damaged block; 20 give up within 0.1 s, measured)
SWMR_READ_ATTEMPTS = 20
#: a live writer extends the file before it rewrites the superblock; a superblock that claims more
#: than the file holds is looked at again after this long before the file is called truncated
RECHECK_TRUNCATION_S = 0.5

_FOREIGN_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\x1f\x8b": "a gzip archive",
    b"CDF\x01": "a netCDF-3 file",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
}


class Superblock:
    """What the superblock of an HDF5 file says (versions 0-3)."""

    def __init__(self, offset: int, version: int, flags: int, eof_address: int | None) -> None:
        self.offset = offset
        self.version = version
        self.flags = flags
        self.eof_address = eof_address  # base-relative end-of-file address (versions 2/3), else None


def _what_is(head: bytes) -> str:
    for magic, name in _FOREIGN_MAGIC.items():
        if head.startswith(magic):
            return name
    if not head:
        return "an empty file"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]):
        return "a text file"
    return "not an HDF5 file"


def read_superblock(path: Path) -> Superblock:
    """The checked superblock of `path`; `RunFileUnreadable` for anything that is not a sound one."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(4096)
            offset = 0
            while True:
                if offset + 8 > size:
                    raise RunFileUnreadable(f"{path}: not an HDF5 run file ({_what_is(head)}, {size} bytes)")
                fh.seek(offset)
                if fh.read(8) == HDF5_SIGNATURE:
                    break
                offset = 512 if offset == 0 else offset * 2  # after a user block: 512, 1024, 2048, ...
            fh.seek(offset)
            block = fh.read(48)
    except PermissionError:
        raise RunFileUnreadable(f"{path}: no permission to read the file") from None
    except IsADirectoryError:
        raise RunFileUnreadable(f"{path}: is a directory, not a run file") from None
    except OSError as exc:
        raise RunFileUnreadable(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if len(block) < 12:
        raise RunFileUnreadable(f"{path}: truncated HDF5 file ({size} bytes; the superblock is cut)")
    version = block[8]
    if version in (0, 1):
        return Superblock(offset, version, 0, None)  # no checksum, no SWMR flags: HDF5 checks the rest
    if version not in (2, 3):
        raise RunFileUnreadable(f"{path}: damaged HDF5 superblock (version byte {version})")
    n_off = block[9]
    if n_off != 8:
        raise RunFileUnreadable(f"{path}: damaged HDF5 superblock (size of offsets {n_off})")
    n = 12 + 4 * n_off
    if len(block) < n + 4:
        raise RunFileUnreadable(f"{path}: truncated HDF5 file ({size} bytes; the superblock is cut)")
    (stored,) = struct.unpack("<I", block[n : n + 4])
    if lookup3_checksum(bytes(block[:n])) != stored:
        raise RunFileUnreadable(f"{path}: damaged HDF5 superblock (checksum does not match)")
    _base, _ext, eof, _root = struct.unpack("<4Q", block[12:n])
    return Superblock(offset, version, block[11], eof)


def short_by(path: Path, sb: Superblock) -> int:
    """How many bytes the file lacks of what its superblock says it holds (0 when whole).

    A closed file that is short was truncated: `RunFileUnreadable`. A file still marked open for
    write may be short because its writer died in a failed write (a full disk): it is read with
    SWMR's checks, and the reader counts only images stored inside the file."""
    if sb.eof_address is None:
        return 0
    need = sb.offset + sb.eof_address
    size = path.stat().st_size
    if size < need and sb.flags:
        time.sleep(RECHECK_TRUNCATION_S)  # a live writer may be between extending and flushing
        sb2 = read_superblock(path)
        need, size = sb2.offset + (sb2.eof_address or 0), path.stat().st_size
        if size < need:
            return need - size
    if size < need:
        raise RunFileUnreadable(f"{path}: truncated: the file holds {size} bytes, its HDF5 superblock says {need}")
    return 0


def _attempts_setter() -> Callable[[int, int], int] | None:
    """``H5Pset_metadata_read_attempts`` of the HDF5 library h5py uses, or None if not found."""
    names = [h5p.__file__]  # dlsym on an extension module searches its dependencies (its libhdf5)
    libs = Path(h5py.__file__).parent.parent / "h5py.libs"
    names += sorted(glob.glob(str(libs / "libhdf5-*"))) + sorted(glob.glob(str(libs / "hdf5*.dll")))
    names += sorted(glob.glob(str(Path(h5py.__file__).parent / "hdf5*.dll")))
    for name in names:
        try:
            fn = getattr(ctypes.CDLL(name), "H5Pset_metadata_read_attempts")
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn
    return None


_SETTER: list[Any] = []


def _swmr_fapl() -> h5p.PropFAID:
    fapl = h5p.create(h5p.FILE_ACCESS)
    if not _SETTER:
        _SETTER.append(_attempts_setter())
    setter = _SETTER[0]
    if setter is not None:
        setter(fapl.id, SWMR_READ_ATTEMPTS)
    return fapl


def swmr_attempts_limited() -> bool:
    """True when SWMR reads here give up on a damaged block after `SWMR_READ_ATTEMPTS`."""
    _swmr_fapl()
    return _SETTER[0] is not None


def open_for_reading(path: str | os.PathLike[str]) -> h5py.File:
    """Open `path` read-only: checked first, plain when closed, SWMR (bounded retries) while open
    for write. Every failure is one line (`RunFileUnreadable`)."""
    return open_checked(path)[0]


def open_checked(path: str | os.PathLike[str]) -> tuple[h5py.File, int]:
    """`open_for_reading`, and how many bytes the file lacks of its superblock's end (`short_by`)."""
    path = Path(path)
    if not path.exists():
        raise RunFileUnreadable(f"{path}: no such run file")
    if not path.is_file():
        raise RunFileUnreadable(f"{path}: not a regular file")
    sb = read_superblock(path)
    short = short_by(path, sb)
    try:
        if sb.flags == 0:
            return h5py.File(path, "r"), short
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY | h5f.ACC_SWMR_READ, fapl=_swmr_fapl())
        return h5py.File(fid), short
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise RunFileUnreadable(f"{path}: damaged HDF5 file: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """An HDF5/h5py error message on one line, without HDF5's error-stack details."""
    text = str(exc).strip().strip("'\"")
    text = text.split("(file read failed", 1)[0].split(", filename =", 1)[0]
    return " ".join(text.split())[:300]
