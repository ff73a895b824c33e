"""Bridge adapters against the shape of the vendor APIs (pytest-mock), and the bridge server on TCP.

The "shape" classes list the vendor methods the adapters may call, with their arguments, as
documented by temscript (niermann/temscript, temscript/base_microscope.py `BaseMicroscope`, read
from its source) and PyJEM (the PyJEM 1.3.5 TEM3 API manual: `TEM3.Def3/EOS3/Lens3/HT3/Stage3`).
Mocks are autospecced from them, so calling a method the vendor API does not have, or with the
wrong arity, fails the test.
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
    def get_stage_status(self) -> str: ...
    def get_stage_limits(self) -> dict: ...
    def get_stage_position(self) -> dict: ...
    def set_stage_position(self, pos: Any = None, method: Any = None, speed: Any = None, **kw: Any) -> None: ...
    def get_image_shift(self) -> tuple: ...
    def set_image_shift(self, pos: Any) -> None: ...
    def get_beam_shift(self) -> tuple: ...
    def set_beam_shift(self, shift: Any) -> None: ...


class Def3Shape:
    def GetBeamBlank(self) -> int: ...
    def SetBeamBlank(self, sw: int) -> None: ...
    def GetIS1(self) -> list: ...
    def SetIS1(self, x: int, y: int) -> None: ...
    def GetCLA1(self) -> list: ...
    def SetCLA1(self, x: int, y: int) -> None: ...


class Stage3Shape:
    def GetPos(self) -> list: ...
    def GetStatus(self) -> list: ...
    def SetX(self, value: float) -> None: ...
    def SetY(self, value: float) -> None: ...
    def SetZ(self, value: float) -> None: ...
    def SetTiltXAngle(self, value: float) -> None: ...


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
    mic.get_stage_status.return_value = "READY"
    mic.get_stage_limits.return_value = {"x": (-1e-3, 1e-3), "y": (-1e-3, 1e-3), "z": (-3e-4, 3e-4),
                                         "a": (-0.5236, 0.5236), "b": (-0.5236, 0.5236)}
    mic.get_stage_position.return_value = {"x": 1e-5, "y": -2e-5, "z": 3e-6, "a": 0.1, "b": 0.0}
    mic.get_image_shift.return_value = (1e-7, -2e-7)
    mic.get_beam_shift.return_value = (3e-8, 4e-8)
    return mic


@pytest.fixture
def tem3(mocker: Any) -> Any:
    ns = types.SimpleNamespace(
        Def3=mocker.create_autospec(Def3Shape, instance=True),
        EOS3=mocker.create_autospec(EOS3Shape, instance=True),
        Lens3=mocker.create_autospec(Lens3Shape, instance=True),
        HT3=mocker.create_autospec(HT3Shape, instance=True),
        Stage3=mocker.create_autospec(Stage3Shape, instance=True),
    )
    ns.Def3.GetBeamBlank.return_value = 1
    ns.EOS3.GetMagValue.return_value = [20000, "X", "X20k"]
    ns.EOS3.GetFunctionMode.return_value = [0, "MAG"]
    ns.Lens3.GetOLf.return_value = 30000
    ns.HT3.GetHtValue.return_value = 200000.0
    ns.Def3.GetIS1.return_value = [32768, 32768]
    ns.Def3.GetCLA1.return_value = [30000, 31000]
    ns.Stage3.GetPos.return_value = [1500.0, -2500.0, 100.0, 10.0, 0.0]
    ns.Stage3.GetStatus.return_value = [0, 0, 0, 0, 0]
    module = types.ModuleType("TEM3")
    for name in ("Def3", "EOS3", "Lens3", "HT3", "Stage3"):
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


def test_temscript_stage_and_shifts(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter(mag_table=MAGS))
    assert p.execute("STAG:X?;Y?;Z?;ALPH?;MOV?") == "1e-05;-2e-05;3e-06;0.1;0"
    assert p.execute("IMAG:SHIF?;:BEAM:SHIF?") == "1e-07,-2e-07;3e-08,4e-08"
    p.execute("STAG:X 5e-4;Y -1e-4;ALPH -0.2;:IMAG:SHIF 1e-6,0;:BEAM:SHIF -1e-8,2e-8")
    assert p.execute("SYST:ERR?") == '0,"No error"'
    assert temscript_mic.set_stage_position.call_args_list == [(({"x": 5e-4},),), (({"y": -1e-4},),), (({"a": -0.2},),)]
    temscript_mic.set_image_shift.assert_called_once_with((1e-6, 0.0))
    temscript_mic.set_beam_shift.assert_called_once_with((-1e-8, 2e-8))
    temscript_mic.get_stage_status.return_value = "MOVING"
    assert p.execute("STAG:MOV?") == "1"


def test_temscript_stage_beyond_the_holder_limits_is_222_and_no_move(temscript_mic: Any) -> None:
    p = build_parser(TemscriptAdapter())
    p.execute("STAG:Z 5e-4")  # inside the wire's +-1 mm, outside this holder's +-0.3 mm
    code, msg = p.execute("SYST:ERR?").split(",", 1)
    assert code == "-222" and "stage limits" in msg
    p.execute("STAG:X 3e-3")  # outside the wire's +-2 mm: refused by the parser
    assert p.execute("SYST:ERR?").startswith("-222,")
    temscript_mic.set_stage_position.assert_not_called()


def test_pyjem_stage_in_nm_and_degrees(tem3: Any) -> None:
    p = build_parser(PyjemAdapter(mag_table=MAGS))
    assert p.execute("STAG:X?;Y?;Z?;ALPH?;MOV?") == "1.5e-06;-2.5e-06;1e-07;0.17453292519943295;0"
    p.execute("STAG:X 2e-6;Y -3e-6;Z 1e-7;ALPH 0.5")
    assert p.execute("SYST:ERR?") == '0,"No error"'
    tem3.Stage3.SetX.assert_called_once_with(pytest.approx(2000.0))
    tem3.Stage3.SetY.assert_called_once_with(pytest.approx(-3000.0))
    tem3.Stage3.SetZ.assert_called_once_with(pytest.approx(100.0))
    tem3.Stage3.SetTiltXAngle.assert_called_once_with(pytest.approx(28.64788975654116))
    tem3.Stage3.GetStatus.return_value = [0, 1, 0, 0, 0]
    assert p.execute("STAG:MOV?") == "1"
    p.execute("STAG:X 5e-4")  # beyond PyJEM's documented +-100 um motor range
    assert p.execute("SYST:ERR?").startswith("-222,")
    tem3.Stage3.SetX.assert_called_once()


def test_pyjem_shifts_are_dac_steps_from_the_start_up_values(tem3: Any) -> None:
    p = build_parser(PyjemAdapter(image_shift_m_per_dac=2e-9, beam_shift_m_per_dac=1e-9))
    assert p.execute("IMAG:SHIF?;:BEAM:SHIF?") == "0.0,0.0;0.0,0.0"
    p.execute("IMAG:SHIF 2e-8,-4e-8;:BEAM:SHIF 1e-9,0")
    assert p.execute("SYST:ERR?") == '0,"No error"'
    tem3.Def3.SetIS1.assert_called_once_with(32768 + 10, 32768 - 20)
    tem3.Def3.SetCLA1.assert_called_once_with(30001, 31000)
    tem3.Def3.GetIS1.return_value = [32778, 32748]
    assert p.execute("IMAG:SHIF?") == "2e-08,-4e-08"
    p.execute("IMAG:SHIF 1e-4,0")  # 50000 steps above 32768: beyond the 16-bit DAC
    code, msg = p.execute("SYST:ERR?").split(",", 1)
    assert code == "-222" and "DAC range" in msg
    tem3.Def3.SetIS1.assert_called_once()


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
