"""`TemMicroscope`: the insitem TEM command set spoken over VISA (TCPIP SOCKET, ASRL) or pyserial.

Every read-back is a query (the interface requires `blanked` to be read from the instrument).
Settings go out as one program message with the error query appended, so each set costs one
round trip and fails loudly: ``SLIT:WIDT 2e-07;:SYST:ERR?`` -> ``0,"No error"``. Blanking is
read back in the same message, ``BEAM:BLAN 1;:BEAM:BLAN?`` -> ``1``; a blank that did not
happen raises `InstrumentError` (the run's safety depends on it, design.md §8).

Errors: no answer -> `DeviceTimeoutError`; dropped connection, garbled or truncated reply ->
`CommunicationError`; an instrument error-queue entry -> `InstrumentError` with its code;
values outside the command table's range are refused before anything is sent
(`InstrumentError`, code -222, as the server would answer).

Beam lease (docs/tem-command-set.md, "Beam lease"): the unblank goes out as
``BEAM:LEAS 5.0;:BEAM:BLAN 0;:BEAM:BLAN?;:SYST:ERR?`` and, once it took, a daemon thread renews
the lease every quarter of it (``BEAM:LEAS 5.0;:BEAM:LEAS?``) until the client asks for a blank
or closes. The thread keeps the beam on while the run's main loop hangs (the run's supervisor
process covers that case); a SIGSTOP, a crash or a lost link stops the thread with the process,
the lease runs out and the bridge blanks by itself. When a renewal finds the lease gone (the
bridge or another client blanked meanwhile), `lease_lost` says why and a warning is logged.

Token: when the bridge requires one, it comes from ``token=`` or, by default, from
$INSITEM_BRIDGE_TOKEN_FILE / $INSITEM_BRIDGE_TOKEN; every state-changing line then starts with
``SYST:AUTH "<token>";`` so a reconnected link is authenticated again without a separate step.
Blanking and queries never carry it.

Transport: `insitem.drivers.transport.open_transport` (VISA ``TCPIP0::host::port::SOCKET``,
``ASRL/dev/ttyUSB0::INSTR``, or pyserial ``serial:///dev/ttyUSB0?baud=115200``), or any object
with ``write(line)``, ``query(line)``, ``close()`` and ``resource`` (tests pass a mock). A timed-out
query is never re-sent; a dropped connection is reconnected once and the message re-sent, which
is safe here because every TEM program message is idempotent (sets are absolute values).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Protocol

from insitem.drivers.errors import CommunicationError, DeviceError, InstrumentError, WrongInstrumentError
from insitem.drivers.interfaces import Beam, InstrumentIdentity, Lens, Microscope, Slit, Stage, StagePosition
from insitem.drivers.scpi import quote
from insitem.drivers.tem.commands import BY_NAME, split_response
from insitem.drivers.tem.session import DEFAULT_LEASE_S, LEASE_RANGE_S, load_token
from insitem.drivers.transport import open_transport

log = logging.getLogger("insitem.tem")

MAX_ERRORS_DRAINED = 32
SAFE_STATE_ATTEMPTS = 3  # blank tries in safe_state
_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"(.*)"\s*$', re.DOTALL)


def parse_error(reply: str) -> tuple[int, str]:
    """``<code>,"<message>"`` -> (code, message), the whole message kept (the TEM servers put
    the detail after ``;``, unlike `insitem.drivers.scpi.parse_error` which trims it for the
    Keithley 2450's severity suffix). ValueError on anything else."""
    m = _ERROR_RE.match(reply)
    if m is None:
        raise ValueError(f"not an error-queue entry: {reply!r}")
    return int(m.group(1)), m.group(2)


class LineTransport(Protocol):
    """A line-oriented connection: send one line, read one line (terminators handled inside)."""

    resource: str

    def write(self, line: str) -> None: ...

    def query(self, line: str) -> str: ...

    def close(self) -> None: ...


class TemMicroscope(Microscope):
    """The TEM behind an insitem bridge (or the emulator), through the command set.

    ``lease_s``: the beam lease asked for at each unblank (the bridge blanks that long after
    the last renewal); ``token``: the bridge's token (default: from the environment, None = none).
    """

    def __init__(
        self,
        resource: str | LineTransport,
        *,
        timeout_s: float = 2.0,
        lease_s: float = DEFAULT_LEASE_S,
        token: str | None = None,
    ) -> None:
        lo, hi = LEASE_RANGE_S
        if not lo <= lease_s <= hi:
            raise ValueError(f"lease_s: {lease_s} s outside [{lo:g}, {hi:g}] s")
        self.lease_s = float(lease_s)
        token = token if token is not None else load_token()
        self._auth = f"SYST:AUTH {quote(token)};:" if token else ""
        self._io = threading.RLock()  # the renewal thread and the caller share the link
        self._renewer: _LeaseRenewer | None = None
        self.lease_lost: str | None = None
        if isinstance(resource, str):
            self._t: LineTransport = open_transport(resource, timeout_s=timeout_s)
        else:
            self._t = resource
        self.resource = self._t.resource
        self._beam = TemBeam(self)
        self._lens = TemLens(self)
        self._slit = TemSlit(self)
        self._stage = TemStage(self)

    # -- parts -----------------------------------------------------------------------------------
    @property
    def beam(self) -> "TemBeam":
        return self._beam

    @property
    def lens(self) -> "TemLens":
        return self._lens

    @property
    def slit(self) -> "TemSlit":
        return self._slit

    @property
    def stage(self) -> "TemStage":
        return self._stage

    # -- wire helpers ---------------------------------------------------------------------------
    def query(self, line: str) -> str:
        with self._io:
            return self._t.query(line)

    def get(self, name: str) -> Any:
        """Query one setting of the command table and decode it."""
        cmd = BY_NAME[name]
        reply = self.query(cmd.query)
        try:
            return cmd.parse_reply(reply)
        except ValueError as exc:
            raise CommunicationError(f"garbled reply to {cmd.query}: {reply!r}", self.resource) from exc

    def set(self, name: str, value: Any) -> None:
        """Send one setting with the error query appended; raise on any queued error."""
        cmd = BY_NAME[name]
        try:
            line = cmd.set_line(value)
        except ValueError as exc:
            raise InstrumentError(str(exc), self.resource, code=-222) from exc
        self.checked(line)

    def checked(self, line: str) -> None:
        """Send a state-changing program message with the error query appended (and the token
        when one is configured); raise `InstrumentError` on any queued error."""
        reply = self.query(f"{self._auth}{line};:SYST:ERR?")
        try:
            code, message = parse_error(reply)
        except ValueError as exc:
            raise CommunicationError(f"garbled reply to {line}: {reply!r}", self.resource) from exc
        if code != 0:
            more = self._drain_after_fault()
            raise InstrumentError(f"{line}: {code},{message}{more}", self.resource, code=code)

    def _drain_after_fault(self) -> str:
        try:
            rest = self.errors()
        except CommunicationError:
            return ""
        return "".join(f"; {c},{m}" for c, m in rest)

    def set_blanked(self, blanked: bool) -> None:
        """Blank/unblank and read the blanker back in the same message; raise if it disagrees.

        Blanking stops the lease renewal first (if the blank fails, the lease still runs out on
        the bridge). Unblanking asks for a lease of `lease_s` in the same message, checks the
        error queue (another connection's lease: -221; no token: -203) and starts the renewal.
        """
        cmd = BY_NAME["beam_blanked"]
        if blanked:
            self._stop_renewing()
            line = f"{cmd.set_line(True)};:{cmd.query}"
        else:
            line = f"{self._auth}BEAM:LEAS {self.lease_s!r};:{cmd.set_line(False)};:{cmd.query};:SYST:ERR?"
        reply = self.query(line)
        parts = split_response(reply)
        try:
            if len(parts) != (1 if blanked else 2):
                raise ValueError("wrong number of answers")
            state = cmd.parse_reply(parts[0])
            code, message = parse_error(parts[1]) if not blanked else (0, "")
        except ValueError as exc:
            raise CommunicationError(f"garbled reply to {line}: {reply!r}", self.resource) from exc
        if state != bool(blanked):
            errs = ([(code, message)] if code else []) + self._safe_errors()
            detail = "".join(f"; {c},{m}" for c, m in errs)
            raise InstrumentError(
                f"beam {'blank' if blanked else 'unblank'} did not take effect: BEAM:BLAN? reads {int(state)}{detail}",
                self.resource,
                code=errs[0][0] if errs else None,
            )
        if code != 0:
            more = self._drain_after_fault()
            raise InstrumentError(f"beam unblank refused: {code},{message}{more}", self.resource, code=code)
        if not blanked:
            self.lease_lost = None
            self._start_renewing()

    # -- the beam lease ---------------------------------------------------------------------------
    def renew_lease(self) -> float:
        """Renew the beam lease now; the seconds left on it (0.0 = this client holds none)."""
        reply = self.query(f"{self._auth}BEAM:LEAS {self.lease_s!r};:BEAM:LEAS?")
        try:
            return float(reply)
        except ValueError as exc:
            raise CommunicationError(f"garbled reply to the lease renewal: {reply!r}", self.resource) from exc

    @property
    def renewing(self) -> bool:
        """True while the renewal thread keeps a lease alive."""
        r = self._renewer
        return r is not None and r.is_alive()

    def _start_renewing(self) -> None:
        if not self.renewing:
            self._renewer = _LeaseRenewer(self, self.lease_s / 4)
            self._renewer.start()

    def _stop_renewing(self) -> None:
        r, self._renewer = self._renewer, None
        if r is not None:
            r.stop()

    def _lease_gone(self, why: str) -> None:
        self.lease_lost = why
        log.warning("TEM %s: %s", self.resource, why)

    def _safe_errors(self) -> list[tuple[int, str]]:
        try:
            return self.errors()
        except CommunicationError:
            return []

    # -- Microscope ---------------------------------------------------------------------------------
    def identify(self) -> InstrumentIdentity:
        reply = self.query("*IDN?")
        fields = [f.strip() for f in reply.split(",")]
        if len(fields) != 4 or not fields[0] or not fields[1]:
            raise WrongInstrumentError(f"*IDN? answered {reply!r}, not <vendor>,<model>,<serial>,<firmware>", self.resource)
        return InstrumentIdentity(fields[0], fields[1], fields[2], fields[3], self.resource)

    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue (at most 32 entries, so a babbling server cannot hang us)."""
        out: list[tuple[int, str]] = []
        for _ in range(MAX_ERRORS_DRAINED):
            reply = self.query("SYST:ERR?")
            try:
                code, message = parse_error(reply)
            except ValueError as exc:
                raise CommunicationError(f"garbled reply to SYST:ERR?: {reply!r}", self.resource) from exc
            if code == 0:
                break
            out.append((code, message))
        return out

    def safe_state(self) -> None:
        """Blank the beam, confirmed by read-back; up to `SAFE_STATE_ATTEMPTS` tries, so a blanker
        or link that fails once still ends blanked. A persistent failure raises the last error."""
        last: DeviceError | None = None
        for _ in range(SAFE_STATE_ATTEMPTS):
            try:
                self.set_blanked(True)
                return
            except DeviceError as exc:
                last = exc
        assert last is not None
        raise last

    def reset(self) -> None:
        """``*RST`` (blanks the beam) and ``*CLS``; then confirm the blank."""
        self._stop_renewing()
        with self._io:
            self._t.write(f"{self._auth}*RST;*CLS")
        if not self.beam.blanked:
            raise InstrumentError("*RST did not blank the beam", self.resource)

    def close(self) -> None:
        """Stop renewing and close the link (a bridge blanks a beam this client still leased)."""
        self._stop_renewing()
        with self._io:
            self._t.close()


class _LeaseRenewer(threading.Thread):
    """Renews the client's beam lease every `interval_s` until stopped or the lease is gone."""

    def __init__(self, mic: TemMicroscope, interval_s: float) -> None:
        super().__init__(name=f"TEM lease renewal {mic.resource}", daemon=True)
        self._mic = mic
        self._interval_s = interval_s
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        if self is not threading.current_thread():
            self.join(timeout=self._mic.lease_s)

    def run(self) -> None:
        failures = 0
        while not self._stopped.wait(self._interval_s):
            try:
                left = self._mic.renew_lease()
            except Exception as exc:  # noqa: BLE001 - keep trying: the bridge blanks if we cannot get through
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("TEM %s: lease renewal failed (%d): %s", self._mic.resource, failures, exc)
                continue
            failures = 0
            if self._stopped.is_set():
                return
            if left <= 0.0:
                self._mic._lease_gone("the beam lease is gone: the bridge or another client blanked the beam")
                return


class TemBeam(Beam):
    def __init__(self, mic: TemMicroscope) -> None:
        self._m = mic

    @property
    def high_tension_V(self) -> float:
        return float(self._m.get("high_tension_V"))

    @property
    def blanked(self) -> bool:
        return bool(self._m.get("beam_blanked"))

    def set_blanked(self, blanked: bool) -> None:
        self._m.set_blanked(blanked)

    @property
    def current_A(self) -> float:
        return float(self._m.get("beam_current_A"))

    def set_current(self, current_A: float) -> None:
        """Store the calibrated beam current (A) in the bridge."""
        self._m.set("beam_current_A", current_A)

    @property
    def illuminated_diameter_m(self) -> float:
        return float(self._m.get("illuminated_diameter_m"))

    def set_illuminated_diameter(self, diameter_m: float) -> None:
        """Store the calibrated illuminated disc diameter (m) in the bridge."""
        self._m.set("illuminated_diameter_m", diameter_m)

    @property
    def illuminated_area_m2(self) -> float:
        return float(self._m.get("illuminated_area_m2"))

    @property
    def shift_m(self) -> tuple[float, float]:
        x, y = self._m.get("beam_shift_m")
        return (float(x), float(y))

    def set_shift(self, x_m: float, y_m: float) -> None:
        self._m.set("beam_shift_m", (x_m, y_m))


class TemLens(Lens):
    def __init__(self, mic: TemMicroscope) -> None:
        self._m = mic

    @property
    def mode(self) -> str:
        return str(self._m.get("lens_mode"))

    def set_mode(self, mode: str) -> None:
        self._m.set("lens_mode", mode)

    @property
    def magnification(self) -> float:
        return float(self._m.get("magnification"))

    def set_magnification(self, magnification: float) -> None:
        self._m.set("magnification", magnification)

    @property
    def defocus_m(self) -> float:
        return float(self._m.get("defocus_m"))

    def set_defocus(self, defocus_m: float) -> None:
        self._m.set("defocus_m", defocus_m)

    @property
    def image_shift_m(self) -> tuple[float, float]:
        x, y = self._m.get("image_shift_m")
        return (float(x), float(y))

    def set_image_shift(self, x_m: float, y_m: float) -> None:
        self._m.set("image_shift_m", (x_m, y_m))


_STAGE_AXES = (("x_m", "stage_x_m"), ("y_m", "stage_y_m"), ("z_m", "stage_z_m"), ("alpha_rad", "stage_alpha_rad"))


class TemStage(Stage):
    """The specimen stage: one query reads all four axes, one message moves the axes given."""

    def __init__(self, mic: TemMicroscope) -> None:
        self._m = mic

    @property
    def position(self) -> StagePosition:
        line = "STAG:X?;Y?;Z?;ALPH?"
        reply = self._m.query(line)
        try:
            x, y, z, a = (float(v) for v in split_response(reply))
        except ValueError as exc:
            raise CommunicationError(f"garbled reply to {line}: {reply!r}", self._m.resource) from exc
        return StagePosition(x, y, z, a)

    def move_to(
        self, x_m: float | None = None, y_m: float | None = None, z_m: float | None = None, alpha_rad: float | None = None
    ) -> None:
        """Absolute move of the axes given, in one message with the error query. Each axis is
        checked against the stage's limits on its own: one out of range is refused (-222,
        `InstrumentError`) and does not move; the axes before it in x, y, z, alpha order did."""
        given = {"x_m": x_m, "y_m": y_m, "z_m": z_m, "alpha_rad": alpha_rad}
        units = []
        for key, name in _STAGE_AXES:
            if given[key] is not None:
                try:
                    units.append(":" + BY_NAME[name].set_line(given[key]))
                except ValueError as exc:
                    raise InstrumentError(str(exc), self._m.resource, code=-222) from exc
        if not units:
            return
        line = ";".join(units)[1:]
        self._m.checked(line)

    @property
    def moving(self) -> bool:
        return bool(self._m.get("stage_moving"))


class TemSlit(Slit):
    def __init__(self, mic: TemMicroscope) -> None:
        self._m = mic

    @property
    def inserted(self) -> bool:
        return bool(self._m.get("slit_inserted"))

    def set_inserted(self, inserted: bool) -> None:
        self._m.set("slit_inserted", inserted)

    @property
    def width_m(self) -> float:
        return float(self._m.get("slit_width_m"))

    def set_width(self, width_m: float) -> None:
        self._m.set("slit_width_m", width_m)

    @property
    def height_m(self) -> float:
        return float(self._m.get("slit_height_m"))

    def set_height(self, height_m: float) -> None:
        self._m.set("slit_height_m", height_m)

    @property
    def centre_m(self) -> tuple[float, float]:
        x, y = self._m.get("slit_centre_m")
        return (float(x), float(y))

    def set_centre(self, x_m: float, y_m: float) -> None:
        self._m.set("slit_centre_m", (x_m, y_m))

    @property
    def angle_rad(self) -> float:
        return float(self._m.get("slit_angle_rad"))

    def set_angle(self, angle_rad: float) -> None:
        self._m.set("slit_angle_rad", angle_rad)
