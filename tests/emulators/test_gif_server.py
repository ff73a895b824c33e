"""The emulated SerialEMCCD server seen from a raw socket: validation codes of gatan-socket.md
§3.1/§3.2, one client at a time (§1), the chunk handshake (§5.2), the DM-script subset (§6) and
survival of random bytes, bad headers and half-closed sockets."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ramp_camera import RampCamera

from insitem.drivers.gif import protocol as P
from insitem.drivers.gif.protocol import Fn
from insitem.simulators.emulators.gif import DMScript, GifEmulator, GifState, RecentLog, ScriptError

pytestmark = pytest.mark.wire


@pytest.fixture(scope="module")
def server() -> Iterator[GifEmulator]:
    with GifEmulator(RampCamera(), superchunk_bytes=4096, io_timeout_s=1.0, handshake_min_s=0.5) as emu:
        yield emu


def connect(emu: GifEmulator) -> socket.socket:
    s = socket.create_connection((emu.host, emu.port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def reply_of(s: socket.socket) -> bytes:
    head = recv_exact(s, 4)
    return head + recv_exact(s, struct.unpack("<i", head)[0] - 4)


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_binds_loopback_and_reads_back_the_port(server: GifEmulator) -> None:
    assert server.host == "127.0.0.1" and server.port > 0
    assert server.resource == f"gif://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (P.pack_request(Fn.GetDMVersion), "0C000000 00000000 7EC40000"),
        (P.pack_request(Fn.IsCameraInserted, (0,)), "0C000000 00000000 01000000"),
        (P.pack_request(Fn.SetReadMode, (-1,), (), (1.0,)), "08000000 00000000"),
        (P.pack_request(Fn.SelectCamera, (0,)), "08000000 00000000"),
        (P.pack_request(Fn.ExecuteScript, (), (False,), (), P.pack_script("Exit(42)")),
         "10000000 00000000 0000000000004540"),
        (P.pack_request(Fn.ExecuteScript, (), (False,), (), P.pack_script("Frobnicate(1)")),
         "10000000 01000000 0000000000388FC0"),  # code 1, −999: unknown script like DM (gs §6.1)
        (struct.pack("<ii", 8, 99), "08000000 FFFFFFFF"),  # unknown code -> −1
        (P.HANDSHAKE, "08000000 FFFFFFFF"),  # handshake outside a transfer -> −1 (gs §5.2)
        (struct.pack("<i", 4), "08000000 FCFFFFFF"),  # total < 8 -> −4
        (struct.pack("<ih", 6, 0), "08000000 FCFFFFFF"),
        (struct.pack("<iii", 12, 10, -1), "08000000 FCFFFFFF"),  # shorter than the fixed part -> −4
        (struct.pack("<iii", 12, 14, 0), "08000000 FAFFFFFF"),  # stray long -> −6
        (struct.pack("<iqqq", 36, 1, 1, 0) + b"Exit(1)\0", "08000000 FAFFFFFF"),  # 64-bit longs (pitfall 1)
        (struct.pack("<iiii", 16, 11, 0, 0), "08000000 FAFFFFFF"),
    ],
)
def test_replies_exactly(server: GifEmulator, request_bytes: bytes, reply: str) -> None:
    with connect(server) as s:
        s.sendall(request_bytes)
        assert reply_of(s) == bytes.fromhex(reply)
        s.sendall(P.pack_request(Fn.GetPluginVersion))  # the connection stays usable
        assert reply_of(s) == P.pack_reply(Fn.GetPluginVersion, 0, (120,))


def test_oversized_request_gets_minus5_and_the_connection_closes(server: GifEmulator) -> None:
    with connect(server) as s:
        s.sendall(struct.pack("<ii", server.max_request_bytes + 8, 1))
        assert reply_of(s) == bytes.fromhex("08000000 FBFFFFFF")
        assert closed(s)


def test_positive_code_carries_all_fields_and_no_data(server: GifEmulator) -> None:
    server.faults.fail_next(Fn.GetAcquiredImage, P.VIEW_IS_ACTIVE)
    req = P.pack_request(Fn.GetAcquiredImage, (8192, 128, 64, 0, 1, 0, 0, 64, 128, 0, 0, 0, -1), (), (0.1, 0.0))
    with connect(server) as s:
        s.sendall(req)
        assert reply_of(s) == P.pack_reply(Fn.GetAcquiredImage, 53, (8192, 128, 64, 0))
        s.sendall(P.pack_request(Fn.GetNumberOfCameras))  # no image bytes in between
        assert reply_of(s) == P.pack_reply(Fn.GetNumberOfCameras, 0, (1,))


def _image_request(binning: int = 1) -> bytes:
    rows, cols = 64 // binning, 128 // binning
    return P.pack_request(Fn.GetAcquiredImage, (rows * cols, cols, rows, 0, binning, 0, 0, rows, cols, 0, 0, 0, -1),
                          (), (0.1, 0.0))


def test_chunked_image_with_handshakes(server: GifEmulator) -> None:
    expected = (np.arange(64)[:, None] * 1000 + np.arange(128)[None, :]).astype("<u2").tobytes()
    with connect(server) as s:
        s.sendall(_image_request())
        header = reply_of(s)
        assert header == P.pack_reply(Fn.GetAcquiredImage, 0, (8192, 128, 64, 4))  # 16384 B / 4096 B
        data = recv_exact(s, 4096)
        for _ in range(3):
            s.sendall(P.HANDSHAKE)
            data += recv_exact(s, 4096)
        assert data == expected
        s.sendall(P.pack_request(Fn.GetDMVersion))
        assert reply_of(s) == P.pack_reply(Fn.GetDMVersion, 0, (50302,))


@pytest.mark.parametrize("handshake", [struct.pack("<iq", 12, 24), struct.pack("<ii", 8, 23), None])
def test_bad_or_missing_handshake_closes_the_client(server: GifEmulator, handshake: bytes | None) -> None:
    with connect(server) as s:
        s.sendall(_image_request())
        reply_of(s)
        recv_exact(s, 4096)
        if handshake is not None:
            s.sendall(handshake)
        assert closed(s)  # pitfall 2: empty recv after a wrong handshake
    with connect(server) as s:  # the listener stays up
        s.sendall(P.pack_request(Fn.GetDMVersion))
        assert reply_of(s) == P.pack_reply(Fn.GetDMVersion, 0, (50302,))


def test_new_connection_replaces_the_old(server: GifEmulator) -> None:
    a = connect(server)
    a.sendall(P.pack_request(Fn.GetDMVersion))
    reply_of(a)
    b = connect(server)
    b.sendall(P.pack_request(Fn.GetDMVersion))
    assert reply_of(b) == P.pack_reply(Fn.GetDMVersion, 0, (50302,))
    assert closed(a)
    a.close()
    b.close()


def test_plugin_state_persists_across_connections(server: GifEmulator) -> None:
    with connect(server) as s:
        s.sendall(P.pack_request(Fn.SetReadMode, (3,), (), (2.0,)))
        reply_of(s)
    with connect(server) as s:
        s.sendall(P.pack_request(Fn.GetPluginVersion))
        reply_of(s)
    assert (server.read_mode, server.read_scaling) == (3, 2.0)
    with connect(server) as s:
        s.sendall(P.pack_request(Fn.SetReadMode, (-1,), (), (1.0,)))
        reply_of(s)


def test_get_last_error_after_execute_script_is_25(server: GifEmulator) -> None:
    with connect(server) as s:
        s.sendall(P.pack_request(Fn.ExecuteScript, (), (False,), (), P.pack_script("Exit(1.0)")))
        reply_of(s)
        s.sendall(P.pack_request(Fn.GetLastError))
        assert reply_of(s) == P.pack_reply(Fn.GetLastError, 0, (25,))  # pitfall 11


def test_half_closed_client_is_dropped(server: GifEmulator) -> None:
    with connect(server) as s:
        s.sendall(struct.pack("<i", 20) + b"\x01\x00")  # half a request, then no more writes
        s.shutdown(socket.SHUT_WR)
        assert closed(s)
    with connect(server) as s:
        s.sendall(P.pack_request(Fn.GetDMVersion))
        assert reply_of(s) == P.pack_reply(Fn.GetDMVersion, 0, (50302,))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_kill_the_server(server: GifEmulator, payload: bytes) -> None:
    with connect(server) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # may already be closed by the server (e.g. after −5)
            while s.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError, OSError):
            pass
    with connect(server) as s:
        s.sendall(P.pack_request(Fn.GetDMVersion))
        assert reply_of(s) == P.pack_reply(Fn.GetDMVersion, 0, (50302,))
    assert not any(e.startswith("internal error") for e in server.errors)


# -- the DM-script subset ---------------------------------------------------------------------------


def run(script: str, families: frozenset[str] = frozenset({"AF", "IFC", "IF"}), select_camera: bool = False,
        gif: GifState | None = None) -> float:
    return DMScript(gif or GifState(), families).run(script, select_camera)


@pytest.mark.parametrize(
    ("script", "value"),
    [
        ("Exit(42)", 42.0),
        ("Exit(-1.5e2)", -150.0),
        ('if ( DoesFunctionExist("IFSetSlitWidth") ) { Exit(1.0); } else { Exit(-1.0); }', 1.0),
        ('if ( DoesFunctionExist("NoSuchThing") ) { Exit(1.0); } else { Exit(-1.0); }', -1.0),
        ("if ( IFSetEnergyLoss(5.0) ) { Exit(1.0); } else { Exit(-1.0); }", 1.0),
        ("IFSetEnergyOffset(3, 7.25); Exit(IFGetEnergyLoss())", 7.25),
        ("if (IFCGetOffsetOn() == 0) IFCSetOffsetOn(1); IFCSetSpectrumOffset(5.0); Exit(IFCGetSpectrumOffset())", 5.0),
        ("IFCSetEnergyShift(-5.0); Exit(IFGetEnergyLoss())", 5.0),  # shift sign inverted (gs §6.2)
        ("if ( IFSetSlitWidth(20.0) ) { IFWaitForFilter(); Exit(IFGetSlitWidth()); } else { Exit(-1.0); }", 20.0),
        ("Object manager = CM_GetCameraManager(); Object cameraList = CM_GetCameras(manager); "
         "Object camera = ObjectAt(cameraList, 0); CM_PrepareDarkReference(camera); Exit(3)", 3.0),
        ("// comment\nnumber x = 2; x = x * 21; Exit(x)", 42.0),
        ("IFSetSlitIn(1)", 0.0),  # no Exit: emulator returns 0.0 (gs §10)
    ],
)
def test_script_subset(script: str, value: float) -> None:
    assert run(script) == value


@pytest.mark.parametrize(
    "script",
    [
        'Exit(__import__("os").system("true"))',  # never eval
        "Exit({value})",  # instamatic's unformatted script (pitfall 19)
        "if ( IFSetEnergyOffset(3, 5.0) ) { Exit(1.0); }",  # void used as truth (pitfall 20)
        "IFSetEnergyOffset(0, 5.0); Exit(1.0)",  # technique 0 not available
        "Exit(1/0)",
        "Exit(" * 500 + "1" + ")" * 500,
        "number x; number x; Exit(1)",
        "Exit(IFGetEnergyLoss(1))",
    ],
)
def test_script_errors(script: str) -> None:
    with pytest.raises(ScriptError):
        run(script)


def test_families_and_select_camera_prefix() -> None:
    with pytest.raises(ScriptError):
        run("Exit(IFGetEnergyLoss())", families=frozenset({"IFC"}))
    assert run('Exit(DoesFunctionExist("IFGetEnergyLoss"))', families=frozenset({"IFC"})) == 0.0
    assert run("CM_PrepareDarkReference(camera); Exit(1)", select_camera=True) == 1.0
    with pytest.raises(ScriptError):  # the plugin's prefix already declares `camera` (gs §4.1)
        run("Object camera = ObjectAt(CM_GetCameras(CM_GetCameraManager()), 0); Exit(1)", select_camera=True)


def test_energy_model_leginon_ht_offset() -> None:
    gif = GifState(ht_offset_eV=2.0)
    assert run("IFSetEnergyOffset(3, 10); Exit(IFGetEnergyLoss())", gif=gif) == 12.0
    assert run("IFSetEnergyOffset(2, 0); Exit(IFGetEnergyLoss())", gif=gif) == 10.0


def test_request_log_of_a_long_running_server_stays_bounded() -> None:
    """The emulator logs every request; a server up for days keeps only about the newest `limit`."""
    with GifEmulator(RampCamera(), io_timeout_s=1.0) as emu:
        emu.requests.limit = 50
        with connect(emu) as s:
            for _ in range(300):
                s.sendall(P.pack_request(Fn.GetPluginVersion))
                assert reply_of(s) == P.pack_reply(Fn.GetPluginVersion, 0, (120,))
        assert 50 <= len(emu.requests) <= 100
        assert all(r.code == Fn.GetPluginVersion for r in emu.requests)
    log = RecentLog(limit=3)
    for k in range(10):
        log.append(k)
    assert log[-3:] == [7, 8, 9] and len(log) <= 6
