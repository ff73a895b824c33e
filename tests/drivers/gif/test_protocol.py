"""SerialEMCCD codec: exact bytes of gatan-socket.md §3.4, round trips of every function code,
the exact-length reply rule (§3.3) and the chunk arithmetic (§5.2)."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from insitem.drivers.errors import CommunicationError
from insitem.drivers.gif import protocol as P
from insitem.drivers.gif.protocol import Fn


def h(text: str) -> bytes:
    """Hex as printed in the reference, with '|' field separators."""
    return bytes.fromhex(text.replace("|", " "))


# -- §3.4 byte-level examples ------------------------------------------------------------------


def test_get_dm_version_exact_bytes() -> None:
    assert P.pack_request(Fn.GetDMVersion) == h("08 00 00 00 | 0E 00 00 00")
    reply = h("0C 00 00 00 | 00 00 00 00 | 7E C4 00 00")
    assert P.pack_reply(Fn.GetDMVersion, 0, (50302,)) == reply
    assert P.parse_reply(Fn.GetDMVersion, 12, reply[4:]) == P.Reply(0, (50302,), (), ())
    assert P.decode_dm_version(50302) == "GMS 3.32"


def test_execute_script_exit42_exact_bytes() -> None:
    request = h(
        "1C 00 00 00 | 01 00 00 00 | 03 00 00 00 | 00 00 00 00 | 45 78 69 74 28 34 32 29 00 00 00 00"
    )
    assert P.pack_script("Exit(42)") == b"Exit(42)\0\0\0\0"
    assert P.pack_request(Fn.ExecuteScript, (), (False,), (), P.pack_script("Exit(42)")) == request
    assert P.unpack_request(request) == P.Request(Fn.ExecuteScript, (), (False,), (), b"Exit(42)\0\0\0\0")
    assert P.pack_reply(Fn.ExecuteScript, 0, (), (), (42.0,)) == h("10 00 00 00 | 00 00 00 00 | 00 00 00 00 00 00 45 40")
    threw = h("10 00 00 00 | 01 00 00 00 | 00 00 00 00 00 38 8F C0")
    assert P.pack_reply(Fn.ExecuteScript, 1, (), (), (-999.0,)) == threw
    assert P.parse_reply(Fn.ExecuteScript, 16, threw[4:]).doubles == (P.SCRIPT_ERROR_SENTINEL,)


def test_set_read_mode_select_camera_is_inserted_exact_bytes() -> None:
    assert P.pack_request(Fn.SetReadMode, (-1,), (), (1.0,)) == h(
        "14 00 00 00 | 0A 00 00 00 | FF FF FF FF | 00 00 00 00 00 00 F0 3F"
    )
    assert P.pack_reply(Fn.SetReadMode, 0) == h("08 00 00 00 | 00 00 00 00")
    assert P.pack_request(Fn.SelectCamera, (0,)) == h("0C 00 00 00 | 09 00 00 00 | 00 00 00 00")
    assert P.pack_reply(Fn.SelectCamera, 0) == h("08 00 00 00 | 00 00 00 00")
    assert P.pack_request(Fn.IsCameraInserted, (0,)) == h("0C 00 00 00 | 0C 00 00 00 | 00 00 00 00")
    assert P.pack_reply(Fn.IsCameraInserted, 0, (), (True,)) == h("0C 00 00 00 | 00 00 00 00 | 01 00 00 00")


def test_unknown_code_reply_and_request_rejection() -> None:
    assert P.pack_reply(Fn.GetDMVersion, P.ERR_UNKNOWN_FUNCTION) == h("08 00 00 00 | FF FF FF FF")
    with pytest.raises(P.BadRequest) as err:
        P.unpack_request(h("08 00 00 00 | 63 00 00 00"))
    assert err.value.code == -1
    # the handshake is not in the table: outside an image transfer it is an unknown code (§5.2)
    with pytest.raises(P.BadRequest) as err:
        P.unpack_request(P.HANDSHAKE)
    assert err.value.code == -1


GET_ACQUIRED_76 = h(
    "4C 00 00 00 06 00 00 00 00 00 10 00 00 04 00 00 00 04 00 00 02 00 00 00 01 00 00 00"
    "00 00 00 00 00 00 00 00 00 04 00 00 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "FF FF FF FF 00 00 00 00 00 00 E0 3F 00 00 00 00 00 00 00 00"
)


def test_get_acquired_image_76_byte_request_and_24_byte_header() -> None:
    longs = (1048576, 1024, 1024, 2, 1, 0, 0, 1024, 1024, 0, 0, 0, -1)
    msg = P.pack_request(Fn.GetAcquiredImage, longs, (), (0.5, 0.0))
    assert len(msg) == 76 and msg == GET_ACQUIRED_76
    assert P.unpack_request(msg) == P.Request(Fn.GetAcquiredImage, longs, (), (0.5, 0.0))
    header = h("18 00 00 00 | 00 00 00 00 | 00 00 10 00 | 00 04 00 00 | 00 04 00 00 | 01 00 00 00")
    assert P.pack_reply(Fn.GetAcquiredImage, 0, (1048576, 1024, 1024, 1)) == header
    spec = P.FunctionTable.spec(Fn.GetAcquiredImage)
    assert P.image_bytes(spec, 1048576) == 2_097_152
    assert P.chunk_count(2_097_152) == 1


def test_handshake_is_exactly_eight_bytes() -> None:
    assert P.HANDSHAKE == h("08 00 00 00 | 18 00 00 00")


# -- table and round trips ----------------------------------------------------------------------


def test_table_codes_are_consecutive_and_24_is_absent() -> None:
    codes = sorted(P.FunctionTable.SPECS)
    assert codes == [c for c in range(1, 44) if c != 24]
    assert [s.name for s in P.FunctionTable.SPECS.values()] == [Fn(c).name for c in codes]


def _values(spec: P.FunctionSpec, draw: st.DrawFn, out: bool) -> tuple[tuple, tuple, tuple]:
    i32 = st.integers(-(2**31), 2**31 - 1)
    dbl = st.floats(allow_nan=False)
    n_long = spec.out_long if out else spec.n_long - (1 if spec.array else 0)
    n_bool = spec.out_bool if out else spec.n_bool
    n_double = spec.out_double if out else spec.n_double
    return (
        tuple(draw(st.lists(i32, min_size=n_long, max_size=n_long))),
        tuple(draw(st.lists(st.booleans(), min_size=n_bool, max_size=n_bool))),
        tuple(draw(st.lists(dbl, min_size=n_double, max_size=n_double))),
    )


@pytest.mark.parametrize("code", sorted(P.FunctionTable.SPECS), ids=lambda c: Fn(c).name)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_code_round_trips(code: int, data: st.DataObject) -> None:
    spec = P.FunctionTable.spec(code)
    longs, bools, doubles = _values(spec, data.draw, out=False)
    array = data.draw(st.binary(max_size=64).map(lambda b: b + b"\0" * (-len(b) % 4))) if spec.array else None
    msg = P.pack_request(code, longs, bools, doubles, array)
    # total = 4 + 4(1+L) + 4B + 8D (+ 4A) (§3.1)
    assert len(msg) == spec.fixed_request_bytes + len(array or b"") == struct.unpack_from("<i", msg)[0]
    assert P.unpack_request(msg) == P.Request(code, longs, bools, doubles, array or b"")
    rc = data.draw(st.integers(0, 60))
    rl, rb, rd = _values(spec, data.draw, out=True)
    reply = P.pack_reply(code, rc, rl, rb, rd)
    assert len(reply) == spec.reply_bytes
    assert P.read_reply(code, io.BytesIO(reply).read) == P.Reply(rc, rl, rb, rd)
    neg = P.pack_reply(code, -data.draw(st.integers(1, 6)))
    assert len(neg) == 8 and P.read_reply(code, io.BytesIO(neg).read).longs == ()


# -- request validation (§3.1) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (h("04 00 00 00"), -4),  # < 8 bytes
        (h("0C 00 00 00 | 0A 00 00 00 | FF FF FF FF"), -4),  # SetReadMode shorter than its fixed part
        (h("0C 00 00 00 | 0E 00 00 00 | 00 00 00 00"), -6),  # GetDMVersion with a stray long
        # pitfall 1: ExecuteScript packed with 64-bit longs -> the code still reads, the length does not
        (struct.pack("<iqqq", 4 + 24 + 8, 1, 1, 0) + b"Ex\0\0\0\0\0\0", -6),
        (P.pack_request(Fn.ExecuteScript, (), (False,), (), b"Exit(1)\0")[:-4], -6),  # array shorter than announced
    ],
)
def test_bad_requests_get_the_plugin_codes(message: bytes, code: int) -> None:
    msg = struct.pack("<i", len(message)) + message[4:]  # the length word always tells the truth here
    with pytest.raises(P.BadRequest) as err:
        P.unpack_request(msg)
    assert err.value.code == code


def test_request_larger_than_buffer_is_minus5() -> None:
    msg = P.pack_request(Fn.ExecuteScript, (), (False,), (), P.pack_script("x" * 100))
    with pytest.raises(P.BadRequest) as err:
        P.unpack_request(msg, max_bytes=64)
    assert err.value.code == -5


# -- reply reading (§3.3) -------------------------------------------------------------------------


class CountingReader:
    """A read_exact that records what was asked, to prove no byte beyond the reply is consumed."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)
        self.asked: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.asked.append(n)
        out = self.buf.read(n)
        assert len(out) == n, "reader asked for bytes that never come (would block on a socket)"
        return out


def test_negative_reply_reads_only_eight_bytes() -> None:
    reader = CountingReader(h("08 00 00 00 | FA FF FF FF"))
    assert P.read_reply(Fn.GetAcquiredImage, reader) == P.Reply(-6)
    assert reader.asked == [4, 4]


def test_image_reply_does_not_consume_pixels() -> None:
    header = P.pack_reply(Fn.GetAcquiredImage, 0, (4, 2, 2, 1))
    reader = CountingReader(header + b"\x01\x00" * 4)
    assert P.read_reply(Fn.GetAcquiredImage, reader).longs == (4, 2, 2, 1)
    assert reader.asked == [4, 20]
    assert reader.buf.read() == b"\x01\x00" * 4


def test_positive_code_keeps_all_output_fields() -> None:
    reply = P.pack_reply(Fn.GetAcquiredImage, 53, (1024, 32, 32))
    assert len(reply) == 24
    assert P.read_reply(Fn.GetAcquiredImage, io.BytesIO(reply).read) == P.Reply(53, (1024, 32, 32, 0), (), ())


@pytest.mark.parametrize("length", [0x41414141, 12, 4, -8])
def test_garbled_length_word_raises_before_reading_on(length: int) -> None:
    reader = CountingReader(struct.pack("<i", length) + bytes(20))
    with pytest.raises(CommunicationError, match="garbled"):
        P.read_reply(Fn.GetAcquiredImage, reader)
    assert reader.asked == [4]


# -- chunks (§5.2 worked sizes) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nbytes", "chunks", "size"),
    [(33_554_432, 1, 33_554_432), (47_139_840, 2, 23_569_920), (67_108_864, 2, 33_554_432),
     (134_217_728, 4, 33_554_432), (8_388_608, 1, 8_388_608)],
)
def test_chunk_arithmetic_matches_worked_sizes(nbytes: int, chunks: int, size: int) -> None:
    assert P.chunk_count(nbytes) == chunks
    sizes = P.chunk_sizes(nbytes, chunks)
    assert sizes[0] == size and sum(sizes) == nbytes and len(sizes) == chunks


@settings(deadline=None)
@given(st.integers(1, 10**9), st.integers(1, 10**8))
def test_chunks_partition_the_image(nbytes: int, superchunk: int) -> None:
    assume(nbytes // superchunk < 10_000)
    n = P.chunk_count(nbytes, superchunk)
    sizes = P.chunk_sizes(nbytes, n)
    assert sum(sizes) == nbytes and all(0 < s <= superchunk for s in sizes)


def test_zero_chunks_is_a_communication_error() -> None:
    with pytest.raises(CommunicationError):
        P.chunk_sizes(1024, 0)


# -- scripts and versions ---------------------------------------------------------------------------


@settings(deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=200))
def test_script_packing_round_trip(text: str) -> None:
    packed = P.pack_script(text)
    assert len(packed) % 4 == 0 and packed[len(text)] == 0 and len(packed) - len(text) in (1, 2, 3, 4)
    assert P.unpack_script(packed) == text


def test_script_packing_refuses_non_ascii() -> None:
    with pytest.raises(UnicodeEncodeError):
        P.pack_script("Exit(1) // Å")


@pytest.mark.parametrize(("code", "text"), [(50302, "GMS 3.32"), (50301, "GMS 3.31"), (40301, "GMS 2.3.1"),
                                            (40300, "GMS 2.3.0"), (371, "DM 3.7.1")])
def test_dm_version_decoding(code: int, text: str) -> None:
    assert P.decode_dm_version(code) == text
