"""How an insitem emulator on a paced clock says so, and how a driver reads it back.

`insitem serve --time-scale K` runs the emulated instruments' world K simulated seconds per wall
second; `insitem run --hardware --time-scale K` runs only against instruments that announce that
same K (docs/decisions/0021-paced-clock-hardware-runs.md). A real instrument never announces one:

* SCPI instruments (the Keithley emulators, the TEM emulator) put ``insitem-emulator xK`` in the
  serial-number field of their ``*IDN?`` answer;
* the GIF emulator's DM-script interpreter offers the function `DM_TIME_SCALE_FUNCTION`, which
  returns K; a real DigitalMicrograph has no such function (the driver asks with
  ``DoesFunctionExist`` first, which a real DM answers 0 without a script error).

Emulators on an unscaled (real-time) clock announce nothing: they keep the real instruments'
identities, which third-party clients check.
"""

from __future__ import annotations

import math
import re

#: the word a paced emulator puts in its identity
MARK = "insitem-emulator"
#: DM-script function of the GIF emulator returning its time scale (no real DM has it)
DM_TIME_SCALE_FUNCTION = "InsitemEmulatorTimeScale"

_PATTERN = re.compile(re.escape(MARK) + r" x([0-9][0-9.eE+-]*)")


def announcement(time_scale: float) -> str:
    """The identity text of an emulator paced at `time_scale` (``insitem-emulator x1000``)."""
    return f"{MARK} x{time_scale:.12g}"


def announced_time_scale(text: str) -> float | None:
    """The time scale an identity field announces, None when it announces none (a real
    instrument, or an emulator in real time)."""
    m = _PATTERN.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def check_time_scale(time_scale: float, what: str = "--time-scale") -> float:
    """`time_scale` as a float when it is a positive finite number, else ValueError naming `what`."""
    value = float(time_scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} {time_scale}: give a positive number of simulated seconds per wall second")
    return value


__all__ = ["DM_TIME_SCALE_FUNCTION", "MARK", "announced_time_scale", "announcement", "check_time_scale"]
