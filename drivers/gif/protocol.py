"""The SerialEMCCD socket protocol: one codec shared by the GIF client and the emulated server.

Wire reference: /work/shared/reference/gatan-socket.md (cited below as "gs §n"). Everything on the
wire is little-endian; "longs" and "BOOLs" are 32-bit, doubles are IEEE-754 binary64 (gs §2).

Request  = total | code, longs... [, array length] | BOOLs | doubles | [array words]   (gs §3.1)
Reply    = total | return code, longs | BOOLs | doubles                              (gs §3.2)
           (exactly 8 bytes when the return code is negative)
Image    = reply header, then the pixel bytes in `numChunks` chunks; the client sends the 8-byte
           handshake `08 00 00 00 18 00 00 00` before every chunk after the first   (gs §5.2)

The function table is class-level data (`FunctionTable.ROWS`): supporting another code is one row.
Counts exclude the function code (in) and the return code (out), as in the plugin's own table.

Written by hand because no maintained Python package implements this protocol as a library (the
known clients, Leginon's pyscope and instamatic, embed it in their camera classes); only `struct`
and numpy are used for the byte work.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, ClassVar, Sequence

from insitem.drivers.errors import CommunicationError

# -- constants (gs §3, §5.2, §8.2) ------------------------------------------------------------

LENGTH_WORD = struct.Struct("<i")
HANDSHAKE_CODE = 24
HANDSHAKE = struct.pack("<ii", 8, HANDSHAKE_CODE)  # gs §3.4: exactly 8 bytes, no reply
SUPERCHUNK_BYTES = 33_554_432  # gs §5.2: 32 MiB, "exactly 4K x 2K x 2"
SEND_SLICE_BYTES = 16_777_216  # gs §5.2: server hands chunks to send() in slices of <= 16 MiB
SCRIPT_ERROR_SENTINEL = -999.0  # gs §6.1 / pitfall 12: what ExecuteScript returns when DM throws

# Negative return codes (gs §3.2)
ERR_UNKNOWN_FUNCTION = -1
ERR_EXCEPTION = -2
ERR_REPLY_TOO_BIG = -3
ERR_TOO_SHORT = -4
ERR_TOO_LONG = -5
ERR_WRONG_LENGTH = -6

# Positive plugin error codes used here (gs §3.2, [DEF])
IMAGE_NOT_FOUND = 1
WRONG_DATA_TYPE = 2
DM_CALL_EXCEPTION = 3
CLIENT_SCRIPT_ERROR = 25
GENERAL_SCRIPT_ERROR = 26
NULL_IMAGE = 51
VIEW_IS_ACTIVE = 53

RETURN_CODE_NAMES: dict[int, str] = {
    -1: "unknown function code",
    -2: "exception while executing the call",
    -3: "reply does not fit in the server buffer",
    -4: "request too short",
    -5: "request too long",
    -6: "request length does not match the function table",
    1: "IMAGE_NOT_FOUND (or script/call failure)",
    2: "WRONG_DATA_TYPE",
    3: "DM_CALL_EXCEPTION",
    10: "ROTBUF_MEMORY_ERROR",
    17: "QUIT_DURING_SAVE",
    20: "THREAD_ERROR",
    22: "CONTINUOUS_ENDED",
    24: "BAD_ANTIALIAS_PARAM",
    25: "CLIENT_SCRIPT_ERROR",
    26: "GENERAL_SCRIPT_ERROR (a DM script threw)",
    27: "GETTING_DEFECTS_ERROR",
    28: "DS_CHANNEL_NOT_ACQUIRED",
    29: "NO_DEFERRED_SUM",
    30: "NO_GPU_AVAILABLE",
    51: "NULL_IMAGE",
    53: "VIEW_IS_ACTIVE (DM's continuous View is running)",
}


def describe_code(code: int) -> str:
    return f"{code} ({RETURN_CODE_NAMES.get(code, 'plugin error')})"


class Fn(IntEnum):
    """Function codes, consecutive from 1 in the order of the plugin's enum (gs §4)."""

    ExecuteScript = 1
    SetDebugMode = 2
    SetDMVersion = 3
    SetCurrentCamera = 4
    QueueScript = 5
    GetAcquiredImage = 6
    GetDarkReference = 7
    GetGainReference = 8
    SelectCamera = 9
    SetReadMode = 10
    GetNumberOfCameras = 11
    IsCameraInserted = 12
    InsertCamera = 13
    GetDMVersion = 14
    GetDMCapabilities = 15
    SetShutterNormallyClosed = 16
    SetNoDMSettling = 17
    GetDSProperties = 18
    AcquireDSImage = 19
    ReturnDSChannel = 20
    StopDSAcquisition = 21
    CheckReferenceTime = 22
    SetK2Parameters = 23
    ChunkHandshake = 24
    SetupFileSaving = 25
    GetFileSaveResult = 26
    SetupFileSaving2 = 27
    GetDefectList = 28
    SetK2Parameters2 = 29
    StopContinuousCamera = 30
    GetPluginVersion = 31
    GetLastError = 32
    FreeK2GainReference = 33
    IsGpuAvailable = 34
    SetupFrameAligning = 35
    FrameAlignResults = 36
    ReturnDeferredSum = 37
    MakeAlignComFile = 38
    WaitUntilReady = 39
    GetLastDoseRate = 40
    SaveFrameMdoc = 41
    GetDMVersionAndBuild = 42
    GetTiltSumProperties = 43


@dataclass(frozen=True)
class FunctionSpec:
    """One row of the function table (gs §4). Counts exclude the function/return code.

    For array functions `n_long` includes the trailing array-length long (gs §3.1).
    `image_unit_bytes` is 0 for calls without image data, else bytes per unit of out L1 (gs §5.1).
    """

    code: int
    name: str
    n_long: int
    n_bool: int
    n_double: int
    array: bool
    out_long: int
    out_bool: int
    out_double: int
    image_unit_bytes: int = 0

    @property
    def fixed_request_bytes(self) -> int:
        """4 + 4·(1+L) + 4·B + 8·D (gs §3.1), without the array."""
        return 4 + 4 * (1 + self.n_long) + 4 * self.n_bool + 8 * self.n_double

    @property
    def reply_bytes(self) -> int:
        """Length of a reply with return code >= 0 (gs §3.2)."""
        return 4 + 4 * (1 + self.out_long) + 4 * self.out_bool + 8 * self.out_double

    @property
    def has_image(self) -> bool:
        return self.image_unit_bytes > 0


class FunctionTable:
    """The plugin's function table (gs §4, SerialEMCCD plugin version 120) as class-level data.

    ChunkHandshake (24) is deliberately absent: it is only valid inside an image transfer and is an
    unknown code anywhere else (gs §5.2).
    """

    # code, L, B, D, array, out L, out B, out D, image bytes/unit
    ROWS: ClassVar[tuple[tuple[Fn, int, int, int, bool, int, int, int, int], ...]] = (
        (Fn.ExecuteScript, 1, 1, 0, True, 0, 0, 1, 0),
        (Fn.SetDebugMode, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.SetDMVersion, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.SetCurrentCamera, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.QueueScript, 1, 0, 0, True, 0, 0, 0, 0),
        (Fn.GetAcquiredImage, 13, 0, 2, False, 4, 0, 0, 2),
        (Fn.GetDarkReference, 11, 0, 2, False, 4, 0, 0, 2),
        (Fn.GetGainReference, 4, 0, 0, False, 4, 0, 0, 4),
        (Fn.SelectCamera, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.SetReadMode, 1, 0, 1, False, 0, 0, 0, 0),
        (Fn.GetNumberOfCameras, 0, 0, 0, False, 1, 0, 0, 0),
        (Fn.IsCameraInserted, 1, 0, 0, False, 0, 1, 0, 0),
        (Fn.InsertCamera, 1, 1, 0, False, 0, 0, 0, 0),
        (Fn.GetDMVersion, 0, 0, 0, False, 1, 0, 0, 0),
        (Fn.GetDMCapabilities, 0, 0, 0, False, 0, 3, 0, 0),
        (Fn.SetShutterNormallyClosed, 2, 0, 0, False, 0, 0, 0, 0),
        (Fn.SetNoDMSettling, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.GetDSProperties, 1, 0, 2, False, 1, 0, 3, 0),
        (Fn.AcquireDSImage, 7, 0, 2, True, 4, 0, 0, 2),
        (Fn.ReturnDSChannel, 5, 0, 0, False, 4, 0, 0, 2),
        (Fn.StopDSAcquisition, 0, 0, 0, False, 0, 0, 0, 0),
        (Fn.CheckReferenceTime, 1, 0, 0, True, 2, 0, 0, 0),
        (Fn.SetK2Parameters, 3, 3, 2, True, 0, 0, 0, 0),
        (Fn.SetupFileSaving, 2, 1, 1, True, 1, 0, 0, 0),
        (Fn.GetFileSaveResult, 0, 0, 0, False, 2, 0, 0, 0),
        (Fn.SetupFileSaving2, 3, 1, 5, True, 1, 0, 0, 0),
        (Fn.GetDefectList, 1, 0, 0, False, 4, 0, 0, 2),
        (Fn.SetK2Parameters2, 5, 3, 6, True, 0, 0, 0, 0),
        (Fn.StopContinuousCamera, 0, 0, 0, False, 0, 0, 0, 0),
        (Fn.GetPluginVersion, 0, 0, 0, False, 1, 0, 0, 0),
        (Fn.GetLastError, 0, 0, 0, False, 1, 0, 0, 0),
        (Fn.FreeK2GainReference, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.IsGpuAvailable, 1, 0, 0, False, 1, 0, 1, 0),
        (Fn.SetupFrameAligning, 12, 0, 8, True, 1, 0, 0, 0),
        (Fn.FrameAlignResults, 0, 0, 0, False, 5, 0, 8, 0),
        (Fn.ReturnDeferredSum, 3, 0, 0, False, 4, 0, 0, 2),
        (Fn.MakeAlignComFile, 3, 0, 2, True, 1, 0, 0, 0),
        (Fn.WaitUntilReady, 1, 0, 0, False, 0, 0, 0, 0),
        (Fn.GetLastDoseRate, 0, 0, 0, False, 0, 0, 1, 0),
        (Fn.SaveFrameMdoc, 2, 0, 0, True, 0, 0, 0, 0),
        (Fn.GetDMVersionAndBuild, 0, 0, 0, False, 2, 0, 0, 0),
        (Fn.GetTiltSumProperties, 0, 0, 0, False, 5, 0, 3, 0),
    )
    SPECS: ClassVar[dict[int, FunctionSpec]] = {
        int(r[0]): FunctionSpec(int(r[0]), r[0].name, *r[1:]) for r in ROWS
    }

    @classmethod
    def get(cls, code: int) -> FunctionSpec | None:
        return cls.SPECS.get(code)

    @classmethod
    def spec(cls, code: int) -> FunctionSpec:
        try:
            return cls.SPECS[code]
        except KeyError:
            raise KeyError(f"function code {code} is not in the SerialEMCCD table") from None


# -- messages -----------------------------------------------------------------------------------


class BadRequest(CommunicationError):
    """A request the server must refuse; `code` is the negative reply code of gs §3.1."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Request:
    """A decoded request. `longs` excludes the function code and, for array functions, the
    trailing array-length long (implied by `array`, which holds whole 32-bit words)."""

    code: int
    longs: tuple[int, ...] = ()
    bools: tuple[bool, ...] = ()
    doubles: tuple[float, ...] = ()
    array: bytes = b""


@dataclass(frozen=True)
class Reply:
    """A decoded reply: return code and output fields (empty for negative codes)."""

    code: int
    longs: tuple[int, ...] = ()
    bools: tuple[bool, ...] = ()
    doubles: tuple[float, ...] = field(default_factory=tuple)


def _check_counts(spec: FunctionSpec, longs: Sequence[int], bools: Sequence[bool], doubles: Sequence[float],
                  array: bytes | None) -> None:
    n_long = spec.n_long - (1 if spec.array else 0)
    if len(longs) != n_long or len(bools) != spec.n_bool or len(doubles) != spec.n_double:
        raise ValueError(
            f"{spec.name}: expected {n_long} longs, {spec.n_bool} BOOLs, {spec.n_double} doubles; "
            f"got {len(longs)}, {len(bools)}, {len(doubles)}"
        )
    if spec.array and (array is None or len(array) % 4):
        raise ValueError(f"{spec.name}: the long array must be whole 32-bit words")
    if not spec.array and array:
        raise ValueError(f"{spec.name} takes no array")


def pack_request(code: int, longs: Sequence[int] = (), bools: Sequence[bool] = (),
                 doubles: Sequence[float] = (), array: bytes | None = None) -> bytes:
    """Encode one request (gs §3.1). For array functions the array length is appended to `longs`.

    Longs are packed explicitly as `<i` (pitfall 1: never numpy's platform int).
    """
    spec = FunctionTable.spec(code)
    _check_counts(spec, longs, bools, doubles, array)
    all_longs = [code, *(int(v) for v in longs)]
    arr = array or b""
    if spec.array:
        all_longs.append(len(arr) // 4)
    total = spec.fixed_request_bytes + len(arr)
    head = struct.pack(
        f"<{1 + len(all_longs) + len(bools)}i{len(doubles)}d",
        total, *all_longs, *(1 if b else 0 for b in bools), *(float(d) for d in doubles),
    )
    return head + arr


def unpack_request(message: bytes, max_bytes: int | None = None) -> Request:
    """Decode and validate one complete request in the plugin's order (gs §3.1).

    Raises `BadRequest` with the reply code: -4 (< 8 bytes or shorter than the fixed part),
    -5 (longer than `max_bytes`), -1 (unknown code), -6 (length does not match the table).
    """
    n = len(message)
    if n < 4:
        raise BadRequest("request shorter than its length word", ERR_TOO_SHORT)
    (total,) = LENGTH_WORD.unpack_from(message)
    if total != n:
        raise BadRequest(f"length word {total} but {n} bytes", ERR_WRONG_LENGTH)
    if total < 8:
        raise BadRequest(f"request of {total} bytes (< 8)", ERR_TOO_SHORT)
    if max_bytes is not None and total > max_bytes:
        raise BadRequest(f"request of {total} bytes exceeds the buffer", ERR_TOO_LONG)
    (code,) = LENGTH_WORD.unpack_from(message, 4)
    spec = FunctionTable.get(code)
    if spec is None:
        raise BadRequest(f"Function code not found: {code}", ERR_UNKNOWN_FUNCTION)
    fixed = spec.fixed_request_bytes
    if total < fixed:
        raise BadRequest(f"{spec.name}: {total} bytes, fixed part needs {fixed}", ERR_TOO_SHORT)
    fields = struct.unpack_from(f"<{spec.n_long}i{spec.n_bool}i{spec.n_double}d", message, 8)
    longs = fields[: spec.n_long]
    bools = tuple(v != 0 for v in fields[spec.n_long: spec.n_long + spec.n_bool])
    doubles = tuple(fields[spec.n_long + spec.n_bool:])
    if spec.array:
        words = longs[-1]
        needed = fixed + 4 * words
        if words < 0 or needed != total:
            raise BadRequest(f"Command wrong length: needed = {needed} numBytes = {total}", ERR_WRONG_LENGTH)
        return Request(code, tuple(longs[:-1]), bools, doubles, bytes(message[fixed:]))
    if fixed != total:
        raise BadRequest(f"Command wrong length: needed = {fixed} numBytes = {total}", ERR_WRONG_LENGTH)
    return Request(code, tuple(longs), bools, doubles)


def pack_reply(code: int, return_code: int, longs: Sequence[int] = (), bools: Sequence[bool] = (),
               doubles: Sequence[float] = ()) -> bytes:
    """Encode a reply (gs §3.2). Negative return codes give exactly `08 00 00 00 | code`;
    otherwise every output field is present, for failures too (zeros when not given)."""
    if return_code < 0:
        return struct.pack("<ii", 8, return_code)
    spec = FunctionTable.spec(code)
    lv = list(longs) + [0] * (spec.out_long - len(longs))
    bv = list(bools) + [False] * (spec.out_bool - len(bools))
    dv = list(doubles) + [0.0] * (spec.out_double - len(doubles))
    if len(lv) != spec.out_long or len(bv) != spec.out_bool or len(dv) != spec.out_double:
        raise ValueError(f"{spec.name}: too many output fields")
    return struct.pack(
        f"<{2 + len(lv) + len(bv)}i{len(dv)}d",
        spec.reply_bytes, return_code, *(int(v) for v in lv), *(1 if b else 0 for b in bv),
        *(float(d) for d in dv),
    )


def parse_reply(code: int, total: int, body: bytes) -> Reply:
    """Decode the bytes after the length word of a reply to function `code` (gs §3.2)."""
    spec = FunctionTable.spec(code)
    if len(body) != total - 4:
        raise CommunicationError(f"{spec.name}: reply body of {len(body)} bytes, header says {total - 4}")
    if total < 8:
        raise CommunicationError(f"{spec.name}: reply length {total} < 8 (garbled header)")
    (rc,) = LENGTH_WORD.unpack_from(body)
    if total == 8 and (rc < 0 or spec.reply_bytes == 8):
        return Reply(rc)
    if total != spec.reply_bytes:
        raise CommunicationError(
            f"{spec.name}: reply of {total} bytes with code {rc}; expected {spec.reply_bytes} (or 8 for a negative code)"
        )
    fields = struct.unpack_from(f"<{spec.out_long}i{spec.out_bool}i{spec.out_double}d", body, 4)
    longs = tuple(fields[: spec.out_long])
    bools = tuple(v != 0 for v in fields[spec.out_long: spec.out_long + spec.out_bool])
    doubles = tuple(fields[spec.out_long + spec.out_bool:])
    return Reply(rc, longs, bools, doubles)


def read_reply(code: int, read_exact: Callable[[int], bytes]) -> Reply:
    """Read one reply with the exact-length rule of gs §3.3: 4 bytes, then exactly n − 4.

    The announced length is checked against the only two values the table allows (8, or the full
    reply) *before* reading on, so a garbled header raises at once instead of blocking on a
    read that never completes or swallowing image bytes.
    """
    spec = FunctionTable.spec(code)
    (total,) = LENGTH_WORD.unpack(read_exact(4))
    if total not in (8, spec.reply_bytes):
        raise CommunicationError(
            f"{spec.name}: reply announces {total} bytes; expected 8 or {spec.reply_bytes} (garbled header)"
        )
    return parse_reply(code, total, read_exact(total - 4))


# -- images (gs §5) ------------------------------------------------------------------------------


def chunk_count(total_bytes: int, superchunk_bytes: int = SUPERCHUNK_BYTES) -> int:
    """numChunks = ceil(bytes / superchunk) (gs §5.2); at least 1 for a non-empty image."""
    if total_bytes <= 0:
        return 0
    return math.ceil(total_bytes / superchunk_bytes)


def chunk_sizes(total_bytes: int, num_chunks: int) -> list[int]:
    """Byte sizes of the chunks: ceil(bytes / numChunks) each, the last the remainder (gs §5.2).

    Both sides compute this from the reply header alone, so the client needs no knowledge of
    the server's superchunk size.
    """
    if num_chunks <= 0 or total_bytes <= 0:
        raise CommunicationError(f"image of {total_bytes} bytes in {num_chunks} chunks")
    size = math.ceil(total_bytes / num_chunks)
    sizes = [size] * (num_chunks - 1)
    last = total_bytes - size * (num_chunks - 1)
    if last <= 0:
        raise CommunicationError(f"{total_bytes} bytes cannot be split in {num_chunks} chunks of {size}")
    return sizes + [last]


def image_bytes(spec: FunctionSpec, units: int) -> int:
    """Byte count of the image data after a reply: out L1 × bytes per unit (gs §5.1)."""
    return units * spec.image_unit_bytes


# -- DM script strings (gs §4.1 ExecuteScript) ----------------------------------------------------


def pack_script(text: str) -> bytes:
    """Script text as the long array: ASCII bytes, a NUL, zero padding to a multiple of 4.

    ASCII only (gs §10: DM's encoding of other characters is not established). A newline is not
    appended; the plugin adds one itself (gs §4.1).
    """
    raw = text.encode("ascii") + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


def unpack_script(array: bytes) -> str:
    """Text of a script array: up to the first NUL (non-ASCII bytes become U+FFFD)."""
    end = array.find(b"\0")
    return array[: end if end >= 0 else len(array)].decode("ascii", errors="replace")


# -- DM version numbers (gs §7) ------------------------------------------------------------------


def decode_dm_version(code: int) -> str:
    """Human-readable GMS/DM version from the plugin's encoding (gs §7)."""
    if code >= 40000:
        gms_major = code // 10000 - 2
        minor = (code % 10000) // 100 * 10 + code % 10
        if gms_major >= 3:
            return f"GMS {gms_major}.{minor:02d}"
        return f"GMS {gms_major}.{minor // 10}.{minor % 10}"
    if 0 < code < 1000:
        return f"DM {code // 100}.{(code // 10) % 10}.{code % 10}"
    return f"DM version code {code}"
