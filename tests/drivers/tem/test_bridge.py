"""Bridge adapters against the shape of the vendor APIs (pytest-mock), and the bridge server on TCP.

The "shape" classes list the vendor methods the adapters may call, with their arguments, as
documented by temscript (niermann/temscript, `BaseMicroscope`) and PyJEM (`TEM3.Def3/EOS3/
Lens3/HT3`). Mocks are autospecced from them, so calling a method the vendor API does not have,
or with the wrong arity, fails the test.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import pytest

from insitem.drivers.tem.bridge import PyjemAdapter, TemscriptAdapter, TemServer, nearest_step, serve_bridge
from insitem.drivers.tem.client import TemMicroscope
from insitem.drivers.tem.commands import build_parser

MAGS = {1: 10000.0, 2: 12000.0, 3: 15000.0, 4: 20000.0}


class TemscriptMicroscopeShape:
    def get_family(self) -> str: ...
    def get_microscope_id(self) -> str: ...
    def get_version(self) -> str: ...
    def get_voltage(self) -> float: ...
    def get_beam_blanked(self) -> bool: ...
    def set_beam_blanked(self, mode: bool) -> None: ...
    def get_projection_mode(self) -> str: ...
    def set_projection_mode(self, mode: str) -> None: ...
    def get_magnification_index(self) -> int: ...
    def set_magnification_index(self, index: int) -> None: ...
    def get_indicated_magnification(self) -> float: ...
    def get_defocus(self) -> float: ...
    def set_defocus(self, value: float) -> None: ...


class Def3Shape:
    def GetBeamBlank(self) -> int: ...
    def SetBeamBlank(self, sw: int) -> None: ...


class EOS3Shape:
    def GetMagValue(self) -> list: ...
    def SetSelector(self, value: int) -> None: ...
    def GetFunctionMode(self) -> list: ...
    def SelectFunctionMode(self, mode: int) -> None: ...


class Lens3Shape:
    def GetOLf(self) -> int: ...
    def SetOLf(self, value: int) -> None: ...


class HT3Shape:
    def GetHtValue(self) -> float: ...


@pytest.fixture
def temscript_mic(mocker: Any) -> Any:
    mic = mocker.create_autospec(TemscriptMicroscopeShape, instance=True)
    module = types.ModuleType("temscript")
    module.Microscope = mocker.Mock(return_value=mic)  # type: ignore[attr-defined]
    mocker.patch.dict(sys.modules, {"temscript": module})
    mic.get_family.return_value = "TITAN"
    mic.get_microscope_id.return_value = "tem01"
    mic.get_version.return_value = "2.1.0"
    mic.get_voltage.return_value = 300.0
    mic.get_beam_blanked.return_value = True
    mic.get_projection_mode.return_value = "IMAGING"
    mic.get_indicated_magnification.return_value = 15000.0
    mic.get_defocus.return_value = -2e-7
    return mic


@pytest.fixture
def tem3(mocker: Any) -> Any:
    ns = types.SimpleNamespace(
        Def3=mocker.create_autospec(Def3Shape, instance=True),
        EOS3=mocker.create_autospec(EOS3Shape, instance=True),
        Lens3=mocker.create_autospec(Lens3Shape, instance=True),
        HT3=mocker.create_autospec(HT3Shape, instance=True),
    )
    ns.Def3.GetBeamBlank.return_value = 1
    ns.EOS3.GetMagValue.return_value = [20000, "X", "X20k"]
    ns.EOS3.GetFunctionMode.return_value = [0, "MAG"]
    ns.Lens3.GetOLf.return_value = 30000
    ns.HT3.GetHtValue.return_value = 200000.0
    module = types.ModuleType("TEM3")
    for name in ("Def3", "EOS3", "Lens3", "HT3"):
        setattr(module, name, mocker.Mock(return_value=getattr(ns, name)))
    pkg = types.ModuleType("PyJEM")
    pkg.TEM3 = module  # type: ignore[attr-defined]
    mocker.patch.dict(sys.modules, {"PyJEM": pkg, "PyJEM.TEM3": module})
    return ns


# -- temscript ------------------------------------------------------------------------------------


def test_temscript_blank_calls_set_beam_blanked(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter(mag_table=MAGS))
    assert p.execute("BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?") == '1;0,"No error"'
    temscript_mic.set_beam_blanked.assert_called_once_with(False)
    temscript_mic.get_beam_blanked.assert_called_once_with()


def test_temscript_reads_are_converted_to_si(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter(mag_table=MAGS))
    assert p.execute("BEAM:HTEN?;:LENS:MODE?;MAG?;DEF?") == "300000.0;TEM;15000.0;-2e-07"
    assert p.execute("*IDN?") == "insitem,TEM bridge temscript TITAN,tem01,2.1.0"
    temscript_mic.get_projection_mode.return_value = "DIFFRACTION"
    assert p.execute("LENS:MODE?") == "DIFF"


def test_temscript_sets(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter(mag_table=MAGS, defocus_m_per_unit=1e-9))
    p.execute("LENS:MODE DIFF;MAG 12000;DEF -5e-7")
    assert p.execute("SYST:ERR?") == '0,"No error"'
    temscript_mic.set_projection_mode.assert_called_once_with("DIFFRACTION")
    temscript_mic.set_magnification_index.assert_called_once_with(2)
    temscript_mic.set_defocus.assert_called_once_with(pytest.approx(-500.0))


def test_temscript_magnification_off_the_table_is_222_and_no_call(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter(mag_table=MAGS))
    p.execute("LENS:MAG 13000")
    assert p.execute("SYST:ERR?").startswith("-222,")
    temscript_mic.set_magnification_index.assert_not_called()


def test_temscript_vendor_failure_is_execution_error(temscript_mic: Any) -> None:
    temscript_mic.set_beam_blanked.side_effect = OSError("COM error 0x80004005")
    p = build_parser(TemscriptAdapter(mag_table=MAGS))
    assert p.execute("BEAM:BLAN 1;:BEAM:BLAN?") == "1"
    code, msg = p.execute("SYST:ERR?").split(",", 1)
    assert code == "-200" and "0x80004005" in msg


def test_stored_calibration_values_never_reach_the_vendor(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter())
    p.execute("BEAM:CURR 1e-9;DIAM 1e-6;:SLIT:WIDT 3e-7;CENT 1e-8,2e-8")
    assert p.execute("BEAM:CURR?;AREA?;:SLIT:WIDT?;CENT?") == "1e-09;7.853981633974483e-13;3e-07;1e-08,2e-08"
    assert p.execute("SYST:ERR?") == '0,"No error"'
    assert [c for c in temscript_mic.method_calls if c[0].startswith("set_")] == []


def test_no_magnification_table_is_execution_error(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter())
    p.execute("LENS:MAG 15000")
    assert p.execute("SYST:ERR?").startswith('-200,"Execution error; RuntimeError: no magnification table')


# -- PyJEM ------------------------------------------------------------------------------------------


def test_pyjem_blank_uses_def3_with_integer_switch(tem3: Any) -> None:
    p = build_parser(PyjemAdapter(mag_table=MAGS))
    assert p.execute("BEAM:BLAN?") == "1"
    p.execute("BEAM:BLAN OFF")
    p.execute("BEAM:BLAN ON")
    assert tem3.Def3.SetBeamBlank.call_args_list == [((0,),), ((1,),)]


def test_pyjem_reads(tem3: Any) -> None:
    p = build_parser(PyjemAdapter(mag_table=MAGS, defocus_m_per_dac=2e-9))
    tem3.Lens3.GetOLf.return_value = 30010  # 10 steps above the start-up value
    assert p.execute("BEAM:HTEN?;:LENS:MAG?;MODE?;DEF?") == "200000.0;20000.0;TEM;2e-08"
    tem3.EOS3.GetFunctionMode.return_value = [4, "DIFF"]
    assert p.execute("LENS:MODE?") == "DIFF"


def test_pyjem_sets(tem3: Any) -> None:
    p = build_parser(PyjemAdapter(mag_table=MAGS, defocus_m_per_dac=2e-9))
    p.execute("LENS:MAG 20000;MODE DIFF;MODE TEM;DEF -1e-7")
    assert p.execute("SYST:ERR?") == '0,"No error"'
    tem3.EOS3.SetSelector.assert_called_once_with(4)
    assert tem3.EOS3.SelectFunctionMode.call_args_list == [((4,),), ((0,),)]
    tem3.Lens3.SetOLf.assert_called_once_with(30000 - 50)


def test_nearest_step_uses_log_distance() -> None:
    assert nearest_step(MAGS, 14900) == 3
    with pytest.raises(ValueError):
        nearest_step(MAGS, 17000)
    with pytest.raises(RuntimeError):
        nearest_step(None, 1000)


# -- the bridge server ------------------------------------------------------------------------------


@pytest.mark.wire
def test_bridge_server_drives_the_vendor_api_over_tcp(temscript_mic: Any) -> None:
    with TemServer(TemscriptAdapter(mag_table=MAGS)) as server:
        assert server.host == "127.0.0.1"
        mic = TemMicroscope(server.resource, timeout_s=2.0)
        try:
            mic.beam.set_blanked(True)  # the mock reads back True
            mic.lens.set_magnification(20000.0)
            assert mic.identify().model == "TEM bridge temscript TITAN"
            temscript_mic.set_beam_blanked.assert_called_once_with(True)
            temscript_mic.set_magnification_index.assert_called_once_with(4)
        finally:
            mic.close()


@pytest.mark.wire
def test_serve_bridge_runs_until_stopped(temscript_mic: Any, capsys: pytest.CaptureFixture[str]) -> None:
    started: list[TemServer] = []
    ready = threading.Event()

    def on_ready(server: TemServer) -> None:
        started.append(server)
        ready.set()

    t = threading.Thread(target=serve_bridge, args=("temscript", "127.0.0.1", 0), kwargs={"ready": on_ready})
    t.start()
    assert ready.wait(5)
    server = started[0]
    mic = TemMicroscope(server.resource)
    assert mic.beam.high_tension_V == 300e3
    mic.close()
    server.stop()
    t.join(5)
    assert not t.is_alive()
    assert server.resource in capsys.readouterr().err


def test_unknown_vendor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown TEM vendor"):
        serve_bridge("hitachi", port=0)
