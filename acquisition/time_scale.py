"""The clock of a hardware run, and the check that a paced one runs only against emulators.

``insitem run --hardware --time-scale K`` runs the runner on a `PacedClock(K)`: K simulated
seconds per wall second, the same pace as the emulators' world started with ``insitem serve
--time-scale K`` (docs/decisions/0021-paced-clock-hardware-runs.md). The plan's times, stairs,
exposure times and the instruments' timestamps are all on that scale; the safety lease, the
supervisor, the TEM beam lease and every I/O timeout stay in wall time.

Safety: a time scale other than 1 would drive a real SourceMeter K times too fast. Before any
instrument is switched on, `check_rig_time_scale` reads what pace every instrument of the rig
announces (drivers/emulated.py): the run goes on only when each one is an insitem emulator
paced at exactly K, or, at K = 1, when none announces another pace.
"""

from __future__ import annotations

from typing import Any

from insitem.drivers.clock import Clock, PacedClock, RealClock
from insitem.drivers.emulated import announced_time_scale, check_time_scale
from insitem.drivers.errors import ResourceError, UsageError

ROLES = ("potentiostat", "camera", "microscope")


def parse_time_scale(value: Any) -> float:
    """The `--time-scale` value as a float; UsageError (one line, exit 2) when not positive."""
    try:
        return check_time_scale(value, "--time-scale")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc) if isinstance(exc, ValueError) else f"--time-scale {value!r}: not a number") from None


def hardware_clock(time_scale: float, t0_s: float = 0.0) -> Clock:
    """Wall time (`RealClock`) at scale 1, else a `PacedClock` reading `t0_s` now."""
    if time_scale == 1.0:
        return RealClock(t0_s)
    return PacedClock(time_scale, t0_s)


def check_rig_time_scale(rig: Any, identities: dict[str, Any], time_scale: float) -> None:
    """Refuse (ResourceError, one line) a rig whose instruments do not announce `time_scale`.

    `identities`: {role: InstrumentIdentity} as the run read them (the Keithley and the TEM
    announce their pace in the serial field); the camera is asked through its DM-script probe,
    at K != 1 only (a run in real time sends a real DM nothing more than before). At K != 1 every
    instrument must be an insitem emulator paced at K; at K = 1 an emulator paced at another K is
    refused too (the run's times would not match the instrument's).
    """
    for role in ROLES:
        ident = identities.get(role)
        announced = announced_time_scale(ident.serial) if ident is not None else None
        if role == "camera" and announced is None and time_scale != 1.0:
            ask = getattr(rig.camera, "emulated_time_scale", None)
            announced = ask() if callable(ask) else None
        resource = getattr(ident, "resource", "") or role
        if announced is None:
            if time_scale != 1.0:
                raise ResourceError(
                    f"--time-scale {time_scale:.12g}: the {role} at {resource} is not an insitem emulator; a time "
                    f"scale other than 1 runs only against emulators started with insitem serve --time-scale {time_scale:.12g}"
                )
        elif announced != time_scale:
            raise ResourceError(
                f"--time-scale {time_scale:.12g}: the {role} at {resource} is an insitem emulator paced at "
                f"{announced:.12g} simulated s per wall s; give run and serve the same --time-scale"
            )


__all__ = ["check_rig_time_scale", "hardware_clock", "parse_time_scale"]
