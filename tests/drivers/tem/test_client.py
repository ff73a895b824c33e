"""Exact wire traffic of every TemMicroscope action (pytest-mock on the transport) and its faults."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, InstrumentError, WrongInstrumentError
from insitem.drivers.interfaces import StagePosition
from insitem.drivers.tem.client import TemMicroscope

OK = '0,"No error"'


def scripted(mocker: Any, replies: list[str]) -> tuple[TemMicroscope, Any]:
    transport = mocker.Mock(resource="TCPIP0::tem::5025::SOCKET")
    transport.query.side_effect = list(replies)
    return TemMicroscope(transport), transport


@pytest.fixture(autouse=True)
def _no_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN", raising=False)
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN_FILE", raising=False)


def sent(transport: Any) -> list[str]:
    return [c.args[0] for c in transport.query.call_args_list]


@pytest.mark.parametrize(
    ("action", "replies", "expected_lines"),
    [
        (lambda m: m.beam.set_blanked(True), ["1"], ["BEAM:BLAN 1;:BEAM:BLAN?"]),
        (lambda m: m.safe_state(), ["1"], ["BEAM:BLAN 1;:BEAM:BLAN?"]),
        (lambda m: m.beam.set_current(5e-10), [OK], ["BEAM:CURR 5e-10;:SYST:ERR?"]),
        (lambda m: m.beam.set_illuminated_diameter(2e-6), [OK], ["BEAM:DIAM 2e-06;:SYST:ERR?"]),
        (lambda m: m.lens.set_mode("DIFF"), [OK], ["LENS:MODE DIFF;:SYST:ERR?"]),
        (lambda m: m.lens.set_magnification(15000.0), [OK], ["LENS:MAG 15000.0;:SYST:ERR?"]),
        (lambda m: m.lens.set_defocus(-2.5e-7), [OK], ["LENS:DEF -2.5e-07;:SYST:ERR?"]),
        (lambda m: m.slit.set_inserted(False), [OK], ["SLIT:INS 0;:SYST:ERR?"]),
        (lambda m: m.slit.set_width(2e-7), [OK], ["SLIT:WIDT 2e-07;:SYST:ERR?"]),
        (lambda m: m.slit.set_height(1.88e-6), [OK], ["SLIT:HEIG 1.88e-06;:SYST:ERR?"]),
        (lambda m: m.slit.set_centre(1e-7, -5e-8), [OK], ["SLIT:CENT 1e-07,-5e-08;:SYST:ERR?"]),
        (lambda m: m.slit.set_angle(0.5), [OK], ["SLIT:ANGL 0.5;:SYST:ERR?"]),
        (lambda m: m.stage.move_to(x_m=1e-6, y_m=-2e-6), [OK], ["STAG:X 1e-06;:STAG:Y -2e-06;:SYST:ERR?"]),
        (lambda m: m.stage.move_to(z_m=5e-7, alpha_rad=0.1), [OK], ["STAG:Z 5e-07;:STAG:ALPH 0.1;:SYST:ERR?"]),
        (lambda m: m.stage.move_to(), [], []),
        (lambda m: m.lens.set_image_shift(1e-7, -5e-8), [OK], ["IMAG:SHIF 1e-07,-5e-08;:SYST:ERR?"]),
        (lambda m: m.beam.set_shift(2e-8, 0.0), [OK], ["BEAM:SHIF 2e-08,0.0;:SYST:ERR?"]),
    ],
)
def test_set_actions_send_exact_lines(mocker: Any, action: Any, replies: list[str], expected_lines: list[str]) -> None:
    mic, transport = scripted(mocker, replies)
    action(mic)
    assert sent(transport) == expected_lines
    transport.write.assert_not_called()


def test_unblank_asks_for_a_lease_checks_errors_and_renews_until_blanked(mocker: Any) -> None:
    transport = mocker.Mock(resource="TCPIP0::tem::5025::SOCKET")
    replies = iter(['0;0,"No error"'])
    renewed = threading.Event()

    def query(line: str) -> str:
        if line == "BEAM:LEAS 0.4;:BEAM:LEAS?":
            renewed.set()
            return "0.4"
        if line == "BEAM:BLAN 1;:BEAM:BLAN?":
            return "1"
        return next(replies)

    transport.query.side_effect = query
    mic = TemMicroscope(transport, lease_s=0.4, token="")
    mic.beam.set_blanked(False)
    assert sent(transport)[0] == "BEAM:LEAS 0.4;:BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?"
    assert renewed.wait(30) and mic.renewing
    mic.beam.set_blanked(True)
    assert not mic.renewing
    n = len(sent(transport))
    time.sleep(0.3)  # more than the renewal interval (0.1 s): nothing more is sent
    assert len(sent(transport)) == n and sent(transport)[-1] == "BEAM:BLAN 1;:BEAM:BLAN?"
    assert mic.lease_lost is None


def test_renewal_that_finds_the_lease_gone_stops_and_says_so(mocker: Any) -> None:
    transport = mocker.Mock(resource="r")
    lines: list[str] = []

    def query(line: str) -> str:
        lines.append(line)
        return '0;0,"No error"' if "BLAN 0" in line else "0.0"

    transport.query.side_effect = query
    mic = TemMicroscope(transport, lease_s=0.4, token="")
    mic.beam.set_blanked(False)
    deadline = time.monotonic() + 30
    while mic.renewing and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not mic.renewing
    assert mic.lease_lost is not None and "gone" in mic.lease_lost
    mic.close()


def test_a_token_prefixes_every_state_change_but_not_blanks_or_queries(mocker: Any) -> None:
    transport = mocker.Mock(resource="r")
    transport.query.side_effect = [OK, '0;0,"No error"', "1", "1"]
    mic = TemMicroscope(transport, token="s3cret-token-0123456789")
    mic.slit.set_width(2e-7)
    mic.beam.set_blanked(False)
    mic.beam.set_blanked(True)
    assert mic.beam.blanked
    auth = 'SYST:AUTH "s3cret-token-0123456789";:'
    assert sent(transport) == [
        f"{auth}SLIT:WIDT 2e-07;:SYST:ERR?",
        f"{auth}BEAM:LEAS 5.0;:BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?",
        "BEAM:BLAN 1;:BEAM:BLAN?",
        "BEAM:BLAN?",
    ]


def test_the_token_comes_from_the_environment(mocker: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    path = tmp_path / "token"
    path.write_text("from-a-file-0123456789\n")
    monkeypatch.setenv("INSITEM_BRIDGE_TOKEN_FILE", str(path))
    mic, transport = scripted(mocker, [OK])
    mic.slit.set_width(2e-7)
    assert sent(transport) == ['SYST:AUTH "from-a-file-0123456789";:SLIT:WIDT 2e-07;:SYST:ERR?']


def test_unblank_refused_by_the_bridge_raises_with_its_code(mocker: Any) -> None:
    mic, transport = scripted(mocker, ['0;-221,"Settings conflict; the beam is leased by another connection (x)"', OK])
    with pytest.raises(InstrumentError, match="refused") as info:
        mic.beam.set_blanked(False)
    assert info.value.code == -221
    assert not mic.renewing


@pytest.mark.parametrize(
    ("read", "reply", "line", "value"),
    [
        (lambda m: m.beam.blanked, "1", "BEAM:BLAN?", True),
        (lambda m: m.beam.high_tension_V, "300000.0", "BEAM:HTEN?", 300e3),
        (lambda m: m.beam.current_A, "5e-10", "BEAM:CURR?", 5e-10),
        (lambda m: m.beam.illuminated_area_m2, "3.141592653589793e-12", "BEAM:AREA?", 3.141592653589793e-12),
        (lambda m: m.beam.illuminated_diameter_m, "2e-06", "BEAM:DIAM?", 2e-6),
        (lambda m: m.lens.mode, "TEM", "LENS:MODE?", "TEM"),
        (lambda m: m.lens.magnification, "15000.0", "LENS:MAG?", 15000.0),
        (lambda m: m.lens.defocus_m, "-2.5e-07", "LENS:DEF?", -2.5e-7),
        (lambda m: m.slit.inserted, "0", "SLIT:INS?", False),
        (lambda m: m.slit.width_m, "+2.000000E-07", "SLIT:WIDT?", 2e-7),
        (lambda m: m.slit.height_m, "1.88e-06", "SLIT:HEIG?", 1.88e-6),
        (lambda m: m.slit.centre_m, "1e-07,-5e-08", "SLIT:CENT?", (1e-7, -5e-8)),
        (lambda m: m.slit.angle_rad, "0.5", "SLIT:ANGL?", 0.5),
        (lambda m: m.stage.position, "1e-06;-2e-06;0.0;0.1", "STAG:X?;Y?;Z?;ALPH?", StagePosition(1e-6, -2e-6, 0.0, 0.1)),
        (lambda m: m.stage.moving, "0", "STAG:MOV?", False),
        (lambda m: m.lens.image_shift_m, "1e-07,-5e-08", "IMAG:SHIF?", (1e-7, -5e-8)),
        (lambda m: m.beam.shift_m, "2e-08,0.0", "BEAM:SHIF?", (2e-8, 0.0)),
    ],
)
def test_reads_query_every_time(mocker: Any, read: Any, reply: str, line: str, value: Any) -> None:
    mic, transport = scripted(mocker, [reply, reply])
    assert read(mic) == value
    assert read(mic) == value
    assert sent(transport) == [line, line]


def test_dose_rate_comes_from_current_and_area(mocker: Any) -> None:
    mic, transport = scripted(mocker, ["1e-09", "7.853981633974483e-13"])  # 1 nA on a 1 um disc
    assert mic.beam.dose_rate_e_per_m2_s / 1e20 == pytest.approx(79.5, abs=0.05)  # physics.md §7 check 10
    assert sent(transport) == ["BEAM:CURR?", "BEAM:AREA?"]


def test_identify_and_errors(mocker: Any) -> None:
    mic, transport = scripted(
        mocker, ["insitem,TEM bridge temscript TITAN,tem01,2.1.0", '-113,"Undefined header"', '-222,"Data out of range"', OK]
    )
    ident = mic.identify()
    assert (ident.vendor, ident.model, ident.serial, ident.firmware) == ("insitem", "TEM bridge temscript TITAN", "tem01", "2.1.0")
    assert mic.errors() == [(-113, "Undefined header"), (-222, "Data out of range")]
    assert sent(transport) == ["*IDN?", "SYST:ERR?", "SYST:ERR?", "SYST:ERR?"]


def test_identify_refuses_a_foreign_answer(mocker: Any) -> None:
    mic, _ = scripted(mocker, ["KEITHLEY INSTRUMENTS"])
    with pytest.raises(WrongInstrumentError):
        mic.identify()


def test_reset_writes_rst_cls_and_confirms_blank(mocker: Any) -> None:
    mic, transport = scripted(mocker, ["1"])
    mic.reset()
    transport.write.assert_called_once_with("*RST;*CLS")
    assert sent(transport) == ["BEAM:BLAN?"]


# -- faults ---------------------------------------------------------------------------------------


def test_blank_that_did_not_happen_raises_with_the_queued_reason(mocker: Any) -> None:
    mic, transport = scripted(mocker, ["0", '-240,"Hardware error; beam blanker did not respond"', OK])
    with pytest.raises(InstrumentError, match="did not take effect") as info:
        mic.beam.set_blanked(True)
    assert info.value.code == -240
    assert sent(transport) == ["BEAM:BLAN 1;:BEAM:BLAN?", "SYST:ERR?", "SYST:ERR?"]


def test_silent_blank_failure_raises_even_with_a_clean_queue(mocker: Any) -> None:
    mic, transport = scripted(mocker, ["0", OK] * 3)
    with pytest.raises(InstrumentError, match="reads 0") as info:
        mic.safe_state()
    assert info.value.code is None
    assert sent(transport).count("BEAM:BLAN 1;:BEAM:BLAN?") == 3  # safe_state tries three times


def test_safe_state_retries_a_blank_that_failed_once(mocker: Any) -> None:
    mic, transport = scripted(mocker, ["0", OK, "1"])
    mic.safe_state()
    assert sent(transport) == ["BEAM:BLAN 1;:BEAM:BLAN?", "SYST:ERR?", "BEAM:BLAN 1;:BEAM:BLAN?"]


def test_set_error_raises_instrument_error_with_code_and_drains(mocker: Any) -> None:
    mic, transport = scripted(mocker, ['-200,"Execution error; COM call failed"', '-222,"Data out of range"', OK])
    with pytest.raises(InstrumentError, match="COM call failed") as info:
        mic.lens.set_magnification(12345.0)
    assert info.value.code == -200 and "-222" in str(info.value)
    assert sent(transport) == ["LENS:MAG 12345.0;:SYST:ERR?", "SYST:ERR?", "SYST:ERR?"]


def test_out_of_range_is_refused_before_sending(mocker: Any) -> None:
    mic, transport = scripted(mocker, [])
    with pytest.raises(InstrumentError) as info:
        mic.slit.set_width(5e-3)
    assert info.value.code == -222
    with pytest.raises(InstrumentError):
        mic.slit.set_angle(float("nan"))
    transport.query.assert_not_called()


@pytest.mark.parametrize("reply", ["\x8f\x00garbled", "1;1", "", "2"])
def test_garbled_blank_reply_is_a_communication_error(mocker: Any, reply: str) -> None:
    mic, _ = scripted(mocker, [reply])
    with pytest.raises(CommunicationError, match="garbled"):
        mic.beam.set_blanked(True)


def test_stage_out_of_the_wire_range_is_refused_before_sending(mocker: Any) -> None:
    mic, transport = scripted(mocker, [])
    with pytest.raises(InstrumentError) as info:
        mic.stage.move_to(x_m=1e-6, y_m=5e-3)
    assert info.value.code == -222
    transport.query.assert_not_called()


def test_stage_refused_by_the_holder_limits_raises_with_222(mocker: Any) -> None:
    mic, _ = scripted(mocker, ['-222,"Data out of range; stage z 0.0005 outside the stage limits [-0.0003, 0.0003]"', OK])
    with pytest.raises(InstrumentError, match="stage limits") as info:
        mic.stage.move_to(z_m=5e-4)
    assert info.value.code == -222


def test_garbled_set_and_get_replies(mocker: Any) -> None:
    mic, _ = scripted(mocker, ["0,No error", "2e-0x"])
    with pytest.raises(CommunicationError):
        mic.slit.set_width(2e-7)
    with pytest.raises(CommunicationError):
        _ = mic.slit.width_m


def test_timeout_propagates_as_device_timeout(mocker: Any) -> None:
    transport = mocker.Mock(resource="r")
    transport.query.side_effect = DeviceTimeoutError("no answer", "r")
    mic = TemMicroscope(transport)
    with pytest.raises(DeviceTimeoutError):
        mic.beam.set_blanked(True)
