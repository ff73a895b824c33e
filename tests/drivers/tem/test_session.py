"""The bridge's beam lease and token (`insitem.drivers.tem.session`), over TCP on loopback.

The blanker state is read from the vendor-shaped fake (`fakevendor/temscript.py`, temscript's
`BaseMicroscope` shape), never from the server's belief. Waits are bounded generously (30 s);
nothing asserts how fast the bridge is.
"""

from __future__ import annotations

import hmac
import importlib.util
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from insitem.drivers.errors import InstrumentError
from insitem.drivers.tem.bridge import TemscriptAdapter, TemServer, load_mag_table
from insitem.drivers.tem.client import TemMicroscope
from insitem.drivers.tem.session import Session, TemService, TokenError, check_bind, is_loopback, load_token

pytestmark = pytest.mark.wire

TOKEN = "correct-horse-battery-staple-42"
WAIT_S = 30.0


def _fake_temscript() -> Any:
    spec = importlib.util.spec_from_file_location("fake_temscript", Path(__file__).parent / "fakevendor" / "temscript.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE = _fake_temscript()


class Line:
    """A raw command-set client: one socket, one line out, one line back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.file = self.sock.makefile("rb")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\n")

    def ask(self, line: str) -> str:
        self.send(line)
        return self.file.readline().decode("ascii").rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _no_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN", raising=False)
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN_FILE", raising=False)


@pytest.fixture
def bridge() -> Iterator[tuple[TemServer, Any]]:
    mic = FAKE.Microscope()
    server = TemServer(TemscriptAdapter(mic, mag_table={1: 10000.0, 2: 20000.0}), shutdown_confirm_s=2.0).start()
    try:
        yield server, mic
    finally:
        server.stop()


@pytest.fixture
def guarded() -> Iterator[tuple[TemServer, Any]]:
    mic = FAKE.Microscope()
    server = TemServer(TemscriptAdapter(mic), token=TOKEN, shutdown_confirm_s=2.0).start()
    try:
        yield server, mic
    finally:
        server.stop()


# -- the lease ------------------------------------------------------------------------------------


def test_unblank_grants_a_lease_that_only_its_connection_holds(bridge: Any) -> None:
    server, mic = bridge
    a, b = Line(server.port), Line(server.port)
    try:
        assert a.ask("BEAM:LEAS 30;:BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?") == '0;0,"No error"'
        assert mic.get_beam_blanked() is False
        assert a.ask("BEAM:LEAS:HOLD?") == "THIS" and b.ask("BEAM:LEAS:HOLD?") == "OTHER"
        assert 0 < float(a.ask("BEAM:LEAS?")) <= 30 and b.ask("BEAM:LEAS?") == "0.0"
        code = b.ask("BEAM:BLAN 0;:SYST:ERR?")  # another connection cannot take the beam over
        assert code.startswith('-221,"Settings conflict; the beam is leased by another connection')
        assert b.ask("BEAM:BLAN 1;:BEAM:BLAN?;:BEAM:LEAS:HOLD?") == "1;NONE"  # but anyone may blank
        assert mic.get_beam_blanked() is True
        assert a.ask("BEAM:LEAS?") == "0.0"  # the renewal tells the first client its lease is gone
        assert b.ask("BEAM:LEAS 30;:BEAM:BLAN 0;:SYST:ERR?") == '0,"No error"'  # free again
        assert b.ask("BEAM:LEAS:HOLD?") == "THIS"
    finally:
        a.close()
        b.close()
    wait_for(lambda: mic.get_beam_blanked() is True, "blank after the holder closed")


def test_closing_the_connection_blanks_the_beam_it_leased(bridge: Any) -> None:
    server, mic = bridge
    c = Line(server.port)
    c.ask("BEAM:LEAS 60;:BEAM:BLAN 0;*OPC?")
    assert mic.get_beam_blanked() is False
    c.close()
    wait_for(lambda: mic.get_beam_blanked() is True, "blank after disconnect")
    assert server.service.lease is None and server.service.blank_pending is None


def test_a_lease_that_is_not_renewed_runs_out(bridge: Any) -> None:
    server, mic = bridge
    c = Line(server.port)
    try:
        t0 = time.monotonic()
        c.ask("BEAM:LEAS 0.3;:BEAM:BLAN 0;*OPC?")
        wait_for(lambda: mic.get_beam_blanked() is True, "blank after the lease ran out")
        assert time.monotonic() - t0 >= 0.3  # not before the lease ran out
        assert c.ask("BEAM:LEAS?;:BEAM:LEAS:HOLD?") == "0.0;NONE"
    finally:
        c.close()


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_only_renewals_extend_the_lease_on_the_bridge_clock() -> None:
    """A fake clock and keeper passes run by hand: no real-time margins involved."""
    mic, clock = FAKE.Microscope(), FakeClock()
    service = TemService(TemscriptAdapter(mic), clock=clock)
    a = Session("a")
    assert service.handle_session(a, "BEAM:LEAS 1.0;:BEAM:BLAN 0;:BEAM:BLAN?") == "0"
    for t in (0.9, 1.8, 2.7):  # renewed every 0.9 s: held for 2.7 s on a 1 s lease
        clock.t = t
        service.tick()
        assert mic.get_beam_blanked() is False
        assert float(service.handle_session(a, "BEAM:LEAS 1.0;:BEAM:LEAS?") or "") == pytest.approx(1.0)
    clock.t = 3.5
    assert service.handle_session(a, "BEAM:BLAN?;:SYST:ERR?;:LENS:MAG?;:BEAM:LEAS:HOLD?") == '0;0,"No error";100000.0;THIS'
    service.tick()  # 0.8 s after the last renewal: still held, queries did not matter
    assert mic.get_beam_blanked() is False
    clock.t = 3.71
    service.tick()  # 1.01 s after the last renewal
    assert mic.get_beam_blanked() is True
    assert service.lease is None and service.blank_pending is None
    assert service.handle_session(a, "BEAM:LEAS?;:BEAM:LEAS:HOLD?") == "0.0;NONE"
    assert service.shutdown(confirm_s=1.0)


def test_the_client_keeps_its_lease_while_unblanked_and_releases_it_on_blank(bridge: Any) -> None:
    server, mic = bridge
    scope = TemMicroscope(server.resource, lease_s=2.0)
    try:
        scope.beam.set_blanked(False)
        lease = server.service.lease
        assert lease is not None
        first = lease.expires_at
        wait_for(lambda: lease.expires_at > first, "a renewal from the client's thread")
        assert mic.get_beam_blanked() is False and scope.renewing
        scope.beam.set_blanked(True)
        assert mic.get_beam_blanked() is True and not scope.renewing
    finally:
        scope.close()


def test_a_second_client_cannot_unblank_a_leased_beam(bridge: Any) -> None:
    server, mic = bridge
    first, second = TemMicroscope(server.resource), TemMicroscope(server.resource)
    try:
        first.beam.set_blanked(False)
        with pytest.raises(InstrumentError, match="leased by another connection") as info:
            second.beam.set_blanked(False)
        assert info.value.code == -221
        second.safe_state()  # the safe direction is never refused
        assert mic.get_beam_blanked() is True
        wait_for(lambda: first.lease_lost is not None, "the first client noticing its lease is gone")
    finally:
        first.close()
        second.close()


def test_stopping_the_server_blanks_a_leased_beam(bridge: Any) -> None:
    server, mic = bridge
    c = Line(server.port)
    c.ask("BEAM:LEAS 60;:BEAM:BLAN 0;*OPC?")
    server.stop()
    assert mic.get_beam_blanked() is True
    c.close()


def test_a_blank_that_fails_is_retried_and_unblanks_are_refused_meanwhile(bridge: Any, mocker: Any) -> None:
    server, mic = bridge
    c, other = Line(server.port), Line(server.port)
    c.ask("BEAM:LEAS 60;:BEAM:BLAN 0;*OPC?")
    real = mic.set_beam_blanked
    failures = [3]

    def flaky(mode: bool) -> None:
        if mode and failures[0] > 0:
            failures[0] -= 1
            raise OSError("COM error 0x80004005")
        real(mode)

    mocker.patch.object(mic, "set_beam_blanked", side_effect=flaky)
    c.close()
    wait_for(lambda: server.service.blank_pending is not None or mic.get_beam_blanked(), "the bridge starts blanking")
    if server.service.blank_pending is not None:
        reply = other.ask("BEAM:BLAN 0;:SYST:ERR?")
        assert reply.startswith('-221,"Settings conflict; the bridge is still blanking') or failures[0] == 0
    wait_for(lambda: mic.get_beam_blanked() is True, "blank after three failed attempts")
    assert failures[0] == 0
    wait_for(lambda: server.service.blank_pending is None, "the blank confirmed")
    other.close()


def test_lease_bounds_are_checked(bridge: Any) -> None:
    server, _ = bridge
    c = Line(server.port)
    try:
        assert c.ask("BEAM:LEAS 0.01;:SYST:ERR?").startswith("-222,")
        assert c.ask("BEAM:LEAS 3600;:SYST:ERR?").startswith("-222,")
        assert c.ask("BEAM:LEAS abc;:SYST:ERR?").startswith("-104,")
    finally:
        c.close()


# -- the token ------------------------------------------------------------------------------------


def test_state_changes_need_the_token_but_blanking_and_queries_do_not(guarded: Any, mocker: Any) -> None:
    server, mic = guarded
    spy = mocker.spy(hmac, "compare_digest")
    c = Line(server.port)
    try:
        assert c.ask("SYST:AUTH?") == "0"
        assert c.ask("BEAM:BLAN 0;:SYST:ERR?").startswith('-203,"Command protected')
        assert c.ask("SLIT:WIDT 3e-7;:SYST:ERR?").startswith("-203,")
        assert c.ask("BEAM:LEAS 10;:SYST:ERR?").startswith("-203,")
        assert mic.get_beam_blanked() is True
        assert c.ask("BEAM:BLAN 1;:BEAM:BLAN?;:BEAM:HTEN?;:SYST:ERR?") == '1;300000.0;0,"No error"'
        assert c.ask('SYST:AUTH "wrong-token-wrong-token";:SYST:ERR?') == '-203,"Command protected; wrong token"'
        assert c.ask(f'SYST:AUTH "{TOKEN}";:SYST:AUTH?;:SYST:ERR?') == '1;0,"No error"'
        assert spy.call_count == 2
        assert c.ask("SLIT:WIDT 3e-7;:BEAM:LEAS 10;:BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?") == '0;0,"No error"'
    finally:
        c.close()
    wait_for(lambda: mic.get_beam_blanked() is True, "blank after the authenticated holder closed")


def test_the_client_sends_the_token_from_the_environment(guarded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, mic = guarded
    without = TemMicroscope(server.resource)
    with pytest.raises(InstrumentError) as info:
        without.beam.set_blanked(False)
    assert info.value.code == -203
    without.close()
    monkeypatch.setenv("INSITEM_BRIDGE_TOKEN", TOKEN)
    scope = TemMicroscope(server.resource)
    try:
        scope.slit.set_width(3e-7)
        scope.beam.set_blanked(False)
        assert mic.get_beam_blanked() is False
    finally:
        scope.close()
    wait_for(lambda: mic.get_beam_blanked() is True, "blank after the client closed")


def test_no_token_beyond_loopback_is_refused_before_binding() -> None:
    with pytest.raises(ValueError, match="refusing to listen on '0.0.0.0'"):
        TemServer(TemscriptAdapter(FAKE.Microscope()), "0.0.0.0", 0)
    assert check_bind("127.0.0.1", None) is None
    warning = check_bind("0.0.0.0", TOKEN)
    assert warning is not None and "beyond loopback" in warning and "unencrypted" in warning
    assert [is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "0.0.0.0", "", "tem-pc", "10.0.0.5")] == [
        True, True, True, True, False, False, False, False]


def test_load_token_sources_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert load_token(path, env={}) == TOKEN
    assert load_token(None, env={"INSITEM_BRIDGE_TOKEN_FILE": str(path), "INSITEM_BRIDGE_TOKEN": "ignored-ignored-x"}) == TOKEN
    assert load_token(None, env={"INSITEM_BRIDGE_TOKEN": " " + TOKEN + " "}) == TOKEN
    assert load_token(None, env={}) is None
    with pytest.raises(TokenError, match="at least 16"):
        load_token(None, env={"INSITEM_BRIDGE_TOKEN": "short"})
    with pytest.raises(TokenError, match="printable ASCII"):
        load_token(None, env={"INSITEM_BRIDGE_TOKEN": 'with"quote-0123456789'})
    with pytest.raises(TokenError, match="cannot read"):
        load_token(tmp_path / "missing", env={})


def test_in_process_lines_run_as_the_trusted_local_session() -> None:
    mic = FAKE.Microscope()
    service = TemService(TemscriptAdapter(mic), token=TOKEN)
    assert service.handle("BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?") == '0;0,"No error"'
    assert service.shutdown(confirm_s=2.0)
    assert mic.get_beam_blanked() is True


# -- the magnification table -----------------------------------------------------------------------


def test_mag_table_file(tmp_path: Path) -> None:
    path = tmp_path / "mags.csv"
    path.write_text("# Titan SA range\nindex,magnification\n1, 10000\n2,20000  # comment\n\n3,2.5e4\n")
    assert load_mag_table(path) == {1: 10000.0, 2: 20000.0, 3: 25000.0}
    for text, message in [
        ("1,10000\n1,20000\n", "index 1 appears twice"),
        ("1,10000\n2,10000\n", "appears twice"),
        ("1;10000\n", "expected 'index,magnification'"),
        ("1.5,10000\n", "integer >= 0"),
        ("1,-5\n", "> 0"),
        ("1,abc\n", "numbers"),
        ("# nothing\n", "no 'index,magnification' rows"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_mag_table(path)
