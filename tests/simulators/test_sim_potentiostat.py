"""SimPotentiostat: galvanostatic control of the world's cell and the declared instrument's ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import SafetyLimitError
from insitem.drivers.interfaces import PotentiostatConfig
from insitem.simulators.detector import CCDDetector, DetectorParameters
from insitem.simulators.devices import SimPotentiostat
from insitem.simulators.electrochemistry import Cell, CellParameters
from insitem.simulators.optics import MicroscopeState, OpticsParameters
from insitem.simulators.sample import Sample
from insitem.simulators.world import SimWorld, cycled_cell


def world(clock: VirtualClock, cycled: bool = False) -> SimWorld:
    """The LASGTP cell, pristine or (cycled) with the electrode its 50 CV cycles formed."""
    cell = cycled_cell(CellParameters.lasgtp_bulk()) if cycled else Cell(CellParameters.lasgtp_bulk())
    return SimWorld(clock, cell, Sample(), MicroscopeState(OpticsParameters(), clock), CCDDetector(DetectorParameters()))


def test_current_mode_passes_exactly_the_sourced_charge() -> None:
    """Galvanostatic hold below the voltage limit: the charge into the cell is I t (the quantity
    Faraday's law turns into inserted Li), and the readings report the sourced current. The cell
    is the cycled one: a pristine cell has no electrode yet to take 2 uA for 10 min (its voltage
    runs to the limit, docs/decisions/0020)."""
    clock = VirtualClock()
    w = world(clock, cycled=True)
    pot = SimPotentiostat(w)
    pot.configure(PotentiostatConfig(compliance_A=1e-3, source_mode="current", voltage_limit_V=4.5))
    q0 = w.cell.charge_passed_C
    pot.set_current(2e-6)
    pot.set_output(True)
    v0 = pot.measure().voltage_V
    clock.sleep(600.0)
    r = pot.measure()
    assert r.source_A == 2e-6 and math.isnan(r.source_V)
    assert r.current_A == pytest.approx(2e-6, abs=3 * 700e-12 + 700e-12)  # 10 uA range of the 2400 (§4.4)
    assert not r.compliance_tripped
    assert r.voltage_V > v0  # charging raises the cell voltage
    assert w.cell.charge_passed_C - q0 == pytest.approx(2e-6 * 600.0, rel=1e-3)
    pot.safe_state()
    assert w.applied_V is None and w.applied_A is None


def test_current_mode_holds_the_voltage_limit() -> None:
    clock = VirtualClock()
    w = world(clock)
    pot = SimPotentiostat(w)
    pot.configure(PotentiostatConfig(compliance_A=1e-2, source_mode="current", voltage_limit_V=1.2))
    pot.set_current(1e-3)  # far more than the cell takes below 1.2 V
    pot.set_output(True)
    clock.sleep(60.0)
    r = pot.measure()
    assert r.compliance_tripped
    assert r.voltage_V == pytest.approx(1.2, abs=1e-6)
    assert abs(r.current_A) < 1e-3


def test_set_current_is_refused_outside_its_window_and_in_voltage_mode() -> None:
    clock = VirtualClock()
    pot = SimPotentiostat(world(clock))
    pot.configure(PotentiostatConfig(compliance_A=1e-3))
    with pytest.raises(SafetyLimitError, match="voltage mode"):
        pot.set_current(1e-6)
    pot.configure(PotentiostatConfig(compliance_A=1e-3, source_mode="current", voltage_limit_V=3.0))
    with pytest.raises(SafetyLimitError, match="compliance_A"):
        pot.set_current(2e-3)
    with pytest.raises(SafetyLimitError, match="current mode"):
        pot.set_voltage(1.0)
    with pytest.raises(SafetyLimitError, match="voltage staircase"):
        pot.run_sweep([0.1, 0.2], 1.0)


def test_current_mode_needs_a_voltage_limit_inside_the_safety_window() -> None:
    with pytest.raises(ValueError, match="voltage_limit_V: required"):
        PotentiostatConfig(compliance_A=1e-3, source_mode="current")
    with pytest.raises(ValueError, match="exceeds the safety window"):
        PotentiostatConfig(compliance_A=1e-3, source_mode="current", voltage_limit_V=20.0, voltage_limits_V=(-5.0, 5.0))


@pytest.mark.parametrize("model,offset_A", [("keithley2400", 300e-12), ("keithley2450", 50e-12)])
def test_noise_follows_the_declared_instruments_lowest_range(model: str, offset_A: float) -> None:
    """A 5 nA reading sits on the 2400's lowest range (1 uA, offset 300 pA) but on the 2450's
    10 nA range (offset 50 pA): sigma = offset/3 at 1 NPLC (physics.md §4.4)."""
    pot = SimPotentiostat(world(VirtualClock()), model=model)
    pot.configure(PotentiostatConfig(compliance_A=1e-3))
    values = np.array([pot._noisy(5e-9) for _ in range(2000)])
    assert values.std(ddof=1) == pytest.approx(offset_A / 3, rel=0.1)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="keithley2400"):
        SimPotentiostat(world(VirtualClock()), model="keithley6430")
