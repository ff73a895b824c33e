"""Keithley SourceMeters as potentiostats: 2400 series (`Keithley2400`) and 2450 (`Keithley2450`)."""

from insitem.drivers.keithley.k2400 import Keithley2400, ScpiSourceMeter, Setting
from insitem.drivers.keithley.k2450 import Keithley2450

__all__ = ["Keithley2400", "Keithley2450", "ScpiSourceMeter", "Setting"]
