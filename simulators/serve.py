"""Emulated instruments over their real wire protocols, sharing one SimWorld (`insitem serve`, insitem/cli/serve.py).

``insitem serve keithley2450 gif tem [--bind 127.0.0.1] [--port N] [--protocol NAME] [--serial]``
builds one `SimWorld` from the protocol's sample preset and puts every requested instrument on
its own TCP port (consecutive from ``--port``, or any free port each when it is 0):

* ``keithley2400`` / ``keithley2450`` - the SCPI SourceMeter emulator whose load is the world's
  cell (through `WorldLoad`), so the charge it passes inserts Li into the simulated sample
  (design.md §6, Faraday's law in simulators/transport.py);
* ``gif`` - the SerialEMCCD socket emulator backed by `SimCamera(world)`: the spectrum images
  show the Li profile the emulated potentiostat's charge made;
* ``tem`` - the insitem TEM command set backed by `SimMicroscope(world.optics)`: blanking through
  it sets the dose record and the beam-induced cell current of the same world.

It prints one ``ROLE=RESOURCE`` line per instrument (stdout, flushed; usable as
``insitem run --hardware --resource ROLE=RESOURCE``) and serves until Ctrl-C or SIGTERM, then
stops every server and exits 0.

Time: the world runs on a `RealClock` because real drivers talk in real time (the emulated
exposure lasts its exposure time, a hold its duration). The SourceMeter model keeps its own
clock bookkeeping (it advances its load by the time elapsed between commands); the camera and
the microscope advance the world by the same clock, so the cell is stepped over every interval
exactly once whichever device asks first (see `WorldLoad`).

``--time-scale K`` (K != 1) puts the world on a `PacedClock`: K simulated seconds pass per wall
second, so an exposure, an integration and the cell's chemistry take 1/K of their wall time, and
every emulator announces K (drivers/emulated.py) so that only ``insitem run --hardware
--time-scale K`` runs against them (docs/decisions/0021-paced-clock-hardware-runs.md).

Tests use `start_servers(...)` directly: a context manager with `.resources`, `.world` and the
emulators themselves (for read-back of the instruments' state and fault injection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from insitem.drivers.clock import Clock, PacedClock, RealClock
from insitem.drivers.emulated import DM_TIME_SCALE_FUNCTION, announcement, check_time_scale
from insitem.drivers.errors import ResourceError
from insitem.protocols.schema import Protocol
from insitem.simulators.emulators import LineServer, PtyServer
from insitem.simulators.current_control import couple_source
from insitem.simulators.emulators.smu import SmuModel, Step
from insitem.simulators.world import SimWorld

SERVE_KINDS = ("keithley2400", "keithley2450", "gif", "tem")
#: role of each instrument kind in the rig (the names `--resource` accepts)
ROLE_OF_KIND = {"keithley2400": "potentiostat", "keithley2450": "potentiostat", "gif": "camera", "tem": "microscope"}


# ---------------------------------------------------------------------------------------------
# Coupling the SourceMeter model to the world


class WorldLoad:
    """`SmuLoad` over a `SimWorld`: the SourceMeter emulator drives the world's cell.

    The SMU model calls ``advance(dt_s, applied_V, compliance_A)`` with the time elapsed since
    its previous call and the source state in effect during it. The camera and microscope views
    of the world may already have stepped the cell over part of that interval (`SimWorld.advance_to`
    when an exposure starts or ends), so the load does not step the cell by ``dt_s`` itself: it
    sets the world's applied level and compliance, advances the world to the clock's present time
    (`advance_to` steps only what is left, with the beam-induced current of the optics in it) and
    reports the mean current over the world time since its previous call: the charge the cell
    passed divided by that span, not by ``dt_s``. The two spans differ by the time between the
    SMU's clock reading and the world's (a thread switch, the world's lock held by the camera while
    it synthesizes an image: tens of ms on a loaded machine, which read a 2 uA source as 2.1 uA
    when the charge was divided by ``dt_s``). The SMU model integrates that mean over ``dt_s``.

    The SMU model's own beam current (`beam_current_A`, 0 here) is ignored: the world's optics
    supply the beam-induced current from the blanker's record (design.md §6).
    """

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self._charge_C = world.cell.charge_passed_C
        self._t_world_s = world.cell_time_s

    def _mean_current_step(self, dt_s: float) -> Step:
        """The step since the previous call, as the world's cell passed it."""
        w = self.world
        cell = w.cell
        q = cell.charge_passed_C - self._charge_C
        span = w.cell_time_s - self._t_world_s
        self._charge_C = cell.charge_passed_C
        self._t_world_s = w.cell_time_s
        i_mean = q / span if span > 0 else float(cell.last_current_A)
        return Step(i_mean, float(cell.V_term_V), bool(cell.last_tripped), i_mean * dt_s)

    def advance(self, dt_s: float, applied_V: float | None, compliance_A: float, beam_current_A: float = 0.0) -> Step:
        w = self.world
        with w.lock:
            w.applied_V = applied_V
            w.compliance_A = compliance_A
            w.advance_to()
            step = self._mean_current_step(dt_s)
            if applied_V is None:
                return Step(0.0, step.terminal_V, False, None)
            return step

    def advance_current(self, current_A: float, dt_s: float, voltage_limit_V: float | None = None,
                        beam_current_A: float = 0.0) -> Step:
        """`advance` for a current source: the world's cell held at `current_A` with the voltage limit."""
        w = self.world
        with w.lock:
            limit = math.copysign(210.0, current_A) if voltage_limit_V is None else voltage_limit_V  # 210 V: the widest source range
            w.hold_current(current_A, w.clock.now(), limit)
            return self._mean_current_step(dt_s)


class CoupledSmuInstrument:
    """A SourceMeter emulator whose source state is copied into the world after every line.

    Between two SMU commands the camera may advance the world; it must do so at the level the
    SMU sources *now* (after the last command changed it), not at the level of the interval
    before. Simplification: during an instrument-timed sweep the world follows the SMU point by
    point through `WorldLoad`, so an exposure ending mid-sweep sees the last point's level.
    """

    def __init__(self, instrument: Any, smu: SmuModel, world: SimWorld) -> None:
        self.instrument = instrument
        self.smu = smu
        self.world = world

    def handle(self, line: str) -> str | None:
        try:
            return self.instrument.handle(line)
        finally:
            with self.smu._lock, self.world.lock:
                couple_source(self.world, self.smu)

    def push_error(self, code: int, message: str | None = None) -> None:
        self.instrument.push_error(code, message)

    def __getattr__(self, name: str) -> Any:  # identity, smu, language, ... of the emulator
        return getattr(self.instrument, name)


# ---------------------------------------------------------------------------------------------
# The set of servers


@dataclass
class ServerSet:
    """Running emulators over one world. A context manager; `stop()` is idempotent.

    `resources`: {role: resource string} with roles potentiostat, camera, microscope;
    `extra_resources`: further (role, resource) pairs (the Keithley's pseudo-terminal with
    ``serial=True``). `servers`: {kind: server object} for read-back and fault injection.
    """

    world: SimWorld
    protocol: Protocol | None = None
    t0_s: float = 0.0  # clock time at which the world started (the cell's time_s counts from it)
    servers: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    extra_resources: list[tuple[str, str]] = field(default_factory=list)
    _stoppers: list[Any] = field(default_factory=list, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def smu(self) -> SmuModel | None:
        """The emulated SourceMeter's state (output, level), if one is served."""
        for kind in ("keithley2400", "keithley2450"):
            if kind in self.servers:
                return self.servers[kind].instrument.smu  # type: ignore[no-any-return]
        return None

    def lines(self) -> list[str]:
        """One ``role=resource`` line per served instrument (what `insitem serve` prints)."""
        return [f"{role}={res}" for role, res in self.resources.items()] + [f"{role}={res}" for role, res in self.extra_resources]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for stopper in reversed(self._stoppers):
            try:
                stopper()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass

    def __enter__(self) -> "ServerSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_kinds(kinds: Sequence[str]) -> list[str]:
    out: list[str] = []
    for k in kinds:
        k = k.lower()
        if k not in SERVE_KINDS:
            raise ResourceError(f"serve: unknown instrument {k!r}; expected {', '.join(SERVE_KINDS)}")
        if k in out:
            raise ResourceError(f"serve: {k} given twice")
        out.append(k)
    if sum(ROLE_OF_KIND[k] == "potentiostat" for k in out) > 1:
        raise ResourceError("serve: one SourceMeter per world (keithley2400 or keithley2450, not both): they would source the same cell")
    if not out:
        raise ResourceError("serve: name at least one instrument")
    return out


def start_servers(
    protocol: Protocol | str,
    kinds: Sequence[str],
    bind: str = "127.0.0.1",
    port: int = 0,
    clock: Clock | None = None,
    *,
    serial: bool = False,
    gif_options: dict[str, Any] | None = None,
    time_scale: float = 1.0,
) -> ServerSet:
    """Start the emulators for `kinds` over one world built from `protocol`'s sample preset.

    `protocol`: a `Protocol` or a protocol file/shipped name. `port` 0 gives every server a free
    port; otherwise the servers take port, port+1, ... in the order of `kinds`. `clock` defaults
    to a `RealClock` (real drivers talk in real time). `serial` also serves the SourceMeter on a
    pseudo-terminal (same instrument). `gif_options` go to `GifEmulator`. `time_scale` K != 1:
    the world runs on a `PacedClock(K)` (K simulated seconds per wall second; not with `clock`)
    and every emulator announces K (drivers/emulated.py).
    Raises ResourceError for bad kinds, ProtocolError for a protocol without a sample preset,
    OSError when a port is taken (servers already started are stopped first).
    """
    from insitem.simulators.devices import SimCamera
    from insitem.simulators.emulators.gif import GifEmulator
    from insitem.simulators.emulators.keithley2400 import Keithley2400Emulator
    from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
    from insitem.simulators.emulators.tem import TemEmulator, TemInstrument
    from insitem.simulators.microscope import SimMicroscope

    if isinstance(protocol, str):
        from insitem.protocols.loader import load

        protocol = load(protocol)
    kinds = _check_kinds(kinds)
    if serial and not any(ROLE_OF_KIND[k] == "potentiostat" for k in kinds):
        raise ResourceError("serve --serial: serves the SourceMeter on a pseudo-terminal; name keithley2400 or keithley2450 too")
    if not 0 <= port <= 65535 - len(kinds):
        raise ResourceError(f"serve --port {port}: out of range")
    try:
        time_scale = check_time_scale(time_scale, "--time-scale")
    except ValueError as exc:
        raise ResourceError(str(exc)) from None
    paced = time_scale != 1.0
    if paced and clock is not None:
        raise ValueError("start_servers: give a clock or a time_scale, not both")
    clock = clock or (PacedClock(time_scale) if paced else RealClock())
    world = SimWorld.from_protocol(protocol, clock)
    out = ServerSet(world, protocol, t0_s=world.clock.now())
    try:
        for n, kind in enumerate(kinds):
            p = port + n if port else 0
            role = ROLE_OF_KIND[kind]
            if role == "potentiostat":
                maker = Keithley2400Emulator if kind == "keithley2400" else Keithley2450Emulator
                emulator = maker(WorldLoad(world), clock, seed=protocol.sample.seed)
                if paced:
                    _announce_in_idn(emulator, time_scale)
                instrument = CoupledSmuInstrument(emulator, emulator.smu, world)
                server: Any = LineServer(instrument, host=bind, port=p).start()
                out._stoppers.append(server.stop)
                out.servers[kind] = server
                out.resources[role] = server.resource_string
                if serial:
                    pty = PtyServer(instrument).start()
                    out._stoppers.append(pty.stop)
                    out.servers[kind + "-serial"] = pty
                    out.extra_resources.append((role, pty.resource_string))
            elif kind == "gif":
                gif = GifEmulator(SimCamera(world, resource="emulated GIF"), host=bind, port=p, **(gif_options or {}))
                if paced:
                    gif.script.define(DM_TIME_SCALE_FUNCTION, 0, lambda: time_scale)
                gif.start()
                out._stoppers.append(gif.stop)
                out.servers[kind] = gif
                out.resources[role] = gif.visa_resource
            else:
                scope = SimMicroscope(world.optics, resource="emulated TEM", position=world.position)
                instrument_tem = TemInstrument(scope, announcement(time_scale)) if paced else TemInstrument(scope)
                tem = TemEmulator(instrument_tem, host=bind, port=p).start()
                out._stoppers.append(tem.stop)
                out.servers[kind] = tem
                out.resources[role] = tem.resource
    except BaseException:
        out.stop()
        raise
    return out


def _announce_in_idn(emulator: Any, time_scale: float) -> None:
    """Put the paced clock's announcement in the serial-number field of a SCPI emulator's *IDN?
    (the 2450 also answers *IDN? from its 2400-language front end)."""
    fields = emulator.identity.split(",")
    fields[2] = announcement(time_scale)
    emulator.identity = ",".join(fields)
    inner = getattr(emulator, "_emulation", None)
    if inner is not None:
        inner.identity = emulator.identity


__all__ = ["CoupledSmuInstrument", "ROLE_OF_KIND", "SERVE_KINDS", "ServerSet", "WorldLoad", "start_servers"]
