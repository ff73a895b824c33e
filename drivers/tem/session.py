"""Who may do what on a TEM command-set server: connections, the beam lease and the token.

The bridge on the microscope PC is the last line of defence for the specimen (design.md §8), so
it does not trust its clients to blank the beam they unblanked. `TemService` wraps a backend (a
vendor adapter, or the emulator's simulated microscope) for a server with many connections:

* **Beam lease.** ``BEAM:BLAN 0`` grants the connection that sent it a lease of its
  ``BEAM:LEASe`` seconds (default `DEFAULT_LEASE_S`). The holder renews it by sending
  ``BEAM:LEASe <s>`` again (only that command renews: a lease is a statement "I am alive and
  still want the beam", not a side effect of a monitoring query). When the lease runs out, when
  the holder's connection closes, or when the server shuts down, the service blanks the beam by
  itself and reads ``beam_blanked`` back from the backend; until it reads 1 it keeps retrying
  with backoff, logs an error each time, and refuses every unblank.
* **One holder.** While one connection holds the lease, an unblank from another is refused with
  -221 (Settings conflict): nobody silently takes over a beam someone else is exposing with.
  Blanking (``BEAM:BLAN 1``, ``*RST``) is always allowed, from any connection, with or without
  the token - the safe direction is never refused (an emergency stop anyone can press); it ends
  the lease once the backend reads back blanked.
* **Token.** With a token configured (`load_token`), every command form except blanking is
  refused with -203 (Command protected) on a connection that has not sent
  ``SYSTem:AUTHenticate "<token>"``; the comparison is `hmac.compare_digest`. Queries are never
  protected. The bridge requires a token whenever it listens beyond loopback (`check_bind`).

Thread safety: one lock around the parser and every backend call (the keeper thread that ends
leases takes it too), so the backend sees one caller at a time.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from insitem.drivers.scpi import ScpiError, ScpiParser, arg_float, unquote
from insitem.drivers.tem.commands import ERROR_QUEUE_SIZE, TemBackend, build_parser

log = logging.getLogger("insitem.tem")

DEFAULT_LEASE_S = 5.0  # a hung or vanished client leaves the beam on at most this long
LEASE_RANGE_S = (0.2, 60.0)  # BEAM:LEASe bounds: below, renewals flood the link; above, no guard
TOKEN_ENV = "INSITEM_BRIDGE_TOKEN"
TOKEN_FILE_ENV = "INSITEM_BRIDGE_TOKEN_FILE"
MIN_TOKEN_CHARS = 16
BLANK_RETRY_MAX_S = 2.0  # backoff cap between blank attempts that were not confirmed


def _error(code: int, message: str) -> ScpiError:
    exc = ScpiError(code)
    exc.message = message
    return exc


# ---------------------------------------------------------------------------------------------
# Token and bind address


class TokenError(ValueError):
    """The token could not be read or is unusable (one line for the user)."""


def load_token(token_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The shared token: `token_file`, else the file named by $INSITEM_BRIDGE_TOKEN_FILE, else
    $INSITEM_BRIDGE_TOKEN; None when none is given. Surrounding whitespace is stripped. Raises
    `TokenError` for an unreadable file or a token shorter than 16 characters or holding
    characters other than printable ASCII without spaces and quotes."""
    env = os.environ if env is None else env
    path = token_file or env.get(TOKEN_FILE_ENV) or None
    if path:
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        source = f"token file {path}"
    else:
        text = env.get(TOKEN_ENV, "").strip()
        if not text:
            return None
        source = f"${TOKEN_ENV}"
    if len(text) < MIN_TOKEN_CHARS:
        raise TokenError(f"the {source} holds {len(text)} characters; use at least {MIN_TOKEN_CHARS} "
                         "(e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    if any(not (33 <= ord(c) <= 126) or c in "\"'" for c in text):
        raise TokenError(f"the {source} may hold only printable ASCII without spaces or quotes")
    return text


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, 'localhost')."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or '' (all interfaces): assume reachable from the network


def check_bind(host: str, token: str | None) -> str | None:
    """Refuse (ValueError) to listen beyond loopback without a token; return the warning to
    print loudly when listening beyond loopback with one (None on loopback)."""
    if is_loopback(host):
        return None
    if token is None:
        raise ValueError(
            f"refusing to listen on {host!r} (beyond loopback) without a token: set ${TOKEN_ENV} or "
            f"${TOKEN_FILE_ENV}, or pass --token-file FILE; or bind 127.0.0.1"
        )
    return (
        f"WARNING: the TEM bridge listens on {host!r}, beyond loopback: anyone who reaches this port can read "
        "the microscope state and blank the beam; changing it needs the token, which travels unencrypted - "
        "keep the port on a private instrument network or behind a firewall rule for the acquisition PC"
    )


# ---------------------------------------------------------------------------------------------
# Sessions and the lease


@dataclass(eq=False)
class Session:
    """One connection (a TCP client, or the whole serial line)."""

    peer: str
    authenticated: bool = False
    lease_s: float = DEFAULT_LEASE_S


@dataclass
class Lease:
    holder: Session
    expires_at: float  # on the service's monotonic clock


class _Guarded:
    """The backend as the parser sees it: sets pass through the service's rules."""

    def __init__(self, service: "TemService") -> None:
        self._svc = service

    def get(self, name: str) -> Any:
        return self._svc.backend.get(name)

    def set(self, name: str, value: Any) -> None:
        self._svc._checked_set(name, value)

    def identity(self) -> str:
        return self._svc.backend.identity()


class TemService:
    """The TEM command set for many connections: parser, beam lease, token (module docstring).

    A session-aware line instrument for `insitem.drivers.lineserver`: `open_session`,
    `handle_session`, `close_session`; `handle(line)` runs a line as the current session (the
    in-process "local" session, trusted, outside `handle_session`). Call `shutdown()` before
    the server stops: it blanks a leased beam and confirms it.
    """

    def __init__(
        self,
        backend: TemBackend,
        *,
        token: str | None = None,
        queue_size: int = ERROR_QUEUE_SIZE,
        name: str = "TEM bridge",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.name = name
        self._token = token.encode("ascii") if token else None
        self._clock = clock
        self._lock = threading.RLock()
        self._local = Session("local", authenticated=True)
        self._current = self._local
        self.lease: Lease | None = None
        self.blank_pending: str | None = None  # why the service is blanking, until read back 1
        self._shutting_down = False
        self._retry_s = 0.1
        self._next_attempt = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._keeper: threading.Thread | None = None
        self.parser: ScpiParser = build_parser(_Guarded(self), queue_size=queue_size)
        self.parser.add("BEAM:LEASe", self._on_lease_set, self._on_lease_query, (1, 1))
        self.parser.add("BEAM:LEASe:HOLDer", None, self._on_holder_query, (0, 0))
        self.parser.add("SYSTem:AUTHenticate", self._on_auth, self._on_auth_query, (1, 1))

    @property
    def token_required(self) -> bool:
        return self._token is not None

    # -- line instrument with sessions -------------------------------------------------------------
    def open_session(self, peer: str) -> Session:
        self._start_keeper()
        return Session(peer, authenticated=self._token is None)

    def handle(self, line: str) -> str | None:
        """Run one line as the current session."""
        with self._lock:
            return self.parser.execute(line)

    def handle_session(self, session: Session, line: str) -> str | None:
        with self.speaking_as(session):
            return self.handle(line)

    @contextlib.contextmanager
    def speaking_as(self, session: Session) -> Iterator[None]:
        """Lines handled inside run as `session` (who holds the lease, who authenticated)."""
        with self._lock:
            previous, self._current = self._current, session
            try:
                yield
            finally:
                self._current = previous

    def close_session(self, session: Session) -> None:
        """The connection ended: a beam it leased is blanked now (never raises)."""
        with self._lock:
            if self.lease is not None and self.lease.holder is session:
                self._lapse(f"connection {session.peer} closed while holding the beam lease")

    def push_error(self, code: int, message: str | None = None) -> None:
        with self._lock:
            self.parser.push_error(code, message)

    # -- the rules ---------------------------------------------------------------------------------
    def _checked_set(self, name: str, value: Any) -> None:
        s = self._current
        if name == "beam_blanked" and value:
            self.backend.set("beam_blanked", True)
            if (self.lease is not None or self.blank_pending is not None) and bool(self.backend.get("beam_blanked")):
                if self.blank_pending is not None:
                    log.info("%s: beam blanked on request of %s (%s); BEAM:BLAN? reads 1", self.name, s.peer, self.blank_pending)
                self.lease = None  # blanked on request and read back: nothing left to guard
                self.blank_pending = None
            return
        if self._token is not None and not s.authenticated:
            raise _error(-203, 'Command protected; send SYST:AUTH "<token>" first (blanking needs none)')
        if name != "beam_blanked":
            self.backend.set(name, value)
            return
        if self._shutting_down:
            raise _error(-221, "Settings conflict; the bridge is shutting down")
        if self.blank_pending is not None:
            raise _error(-221, f"Settings conflict; the bridge is still blanking ({self.blank_pending}), not confirmed yet")
        if self.lease is not None and self.lease.holder is not s:
            raise _error(-221, f"Settings conflict; the beam is leased by another connection ({self.lease.holder.peer})")
        # the lease first: if the vendor call fails half-way, the beam is still guarded
        self.lease = Lease(s, self._clock() + s.lease_s)
        self._wake.set()
        self.backend.set("beam_blanked", False)

    def _on_lease_set(self, args: list[str]) -> None:
        s = self._current
        if self._token is not None and not s.authenticated:
            raise _error(-203, 'Command protected; send SYST:AUTH "<token>" first')
        s.lease_s = arg_float(args[0], *LEASE_RANGE_S)
        if self.lease is not None and self.lease.holder is s:
            self.lease.expires_at = self._clock() + s.lease_s
            self._wake.set()

    def _on_lease_query(self, args: list[str]) -> str:
        if args:
            raise ScpiError(-108, "BEAM:LEAS?")
        lease = self.lease
        if lease is None or lease.holder is not self._current:
            return "0.0"
        return repr(max(0.0, lease.expires_at - self._clock()))

    def _on_holder_query(self, args: list[str]) -> str:
        if args:
            raise ScpiError(-108, "BEAM:LEAS:HOLD?")
        if self.lease is None:
            return "NONE"
        return "THIS" if self.lease.holder is self._current else "OTHER"

    def _on_auth(self, args: list[str]) -> None:
        s = self._current
        if self._token is None:
            s.authenticated = True
            return
        given = unquote(args[0].strip()).encode("ascii", "replace")
        if hmac.compare_digest(given, self._token):
            s.authenticated = True
            return
        s.authenticated = False
        log.warning("%s: wrong token from %s", self.name, s.peer)
        raise _error(-203, "Command protected; wrong token")

    def _on_auth_query(self, args: list[str]) -> str:
        if args:
            raise ScpiError(-108, "SYST:AUTH?")
        return "1" if (self._token is None or self._current.authenticated) else "0"

    # -- blanking by the service -------------------------------------------------------------------
    def _lapse(self, reason: str) -> None:
        """Under the lock: drop the lease and blank now; the keeper retries until read back."""
        self.lease = None
        self.blank_pending = reason
        self._retry_s = 0.1
        if not self._try_blank():
            self._start_keeper()
            self._wake.set()

    def _try_blank(self) -> bool:
        """Under the lock: one blank with read-back for `blank_pending`; True when confirmed."""
        reason = self.blank_pending
        try:
            self.backend.set("beam_blanked", True)
            confirmed = bool(self.backend.get("beam_blanked"))
            detail = "BEAM:BLAN? reads 0"
        except Exception as exc:  # noqa: BLE001 - a vendor failure is retried, never raised into a server thread
            confirmed, detail = False, f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        if confirmed:
            self.blank_pending = None
            log.info("%s: beam blanked by the bridge (%s); BEAM:BLAN? reads 1", self.name, reason)
            return True
        log.error("%s: beam NOT confirmed blanked (%s): %s; retrying in %.1f s", self.name, reason, detail, self._retry_s)
        self._next_attempt = self._clock() + self._retry_s
        self._retry_s = min(BLANK_RETRY_MAX_S, self._retry_s * 2)
        return False

    def _start_keeper(self) -> None:
        with self._lock:
            if self._keeper is None and not self._stop.is_set():
                self._keeper = threading.Thread(target=self._keep, name=f"{self.name} lease keeper", daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        """Ends leases that run out and retries blanks that were not confirmed."""
        while not self._stop.is_set():
            self._wake.wait(self.tick())
            self._wake.clear()

    def tick(self) -> float:
        """One pass of the keeper: end a lease that ran out, retry a pending blank. Returns the
        seconds until the next pass is due (the keeper thread calls it; tests with a fake clock
        may too)."""
        with self._lock:
            now = self._clock()
            lease = self.lease
            if lease is not None and now >= lease.expires_at:
                self._lapse(f"the beam lease of {lease.holder.peer} ran out: no renewal for {lease.holder.lease_s:g} s")
            elif self.blank_pending is not None and now >= self._next_attempt:
                self._try_blank()
            wait = 0.25
            if self.lease is not None:
                wait = min(wait, max(0.0, self.lease.expires_at - now))
            if self.blank_pending is not None:
                wait = min(wait, max(0.0, self._next_attempt - now))
            return wait

    def shutdown(self, confirm_s: float = 5.0) -> bool:
        """Refuse new unblanks, blank a leased beam and confirm it (retrying up to `confirm_s`),
        stop the keeper. True when nothing is left unconfirmed."""
        with self._lock:
            self._shutting_down = True
            if self.lease is not None:
                self._lapse(f"the bridge is shutting down while {self.lease.holder.peer} holds the beam lease")
        deadline = time.monotonic() + confirm_s
        while True:
            with self._lock:
                if self.blank_pending is None:
                    break
                if time.monotonic() >= deadline:
                    log.error("%s: shutting down with the beam NOT confirmed blanked (%s)", self.name, self.blank_pending)
                    break
                if self._clock() >= self._next_attempt:
                    self._try_blank()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=2.0)
        return self.blank_pending is None


__all__ = [
    "DEFAULT_LEASE_S",
    "LEASE_RANGE_S",
    "Lease",
    "MIN_TOKEN_CHARS",
    "Session",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "TemService",
    "TokenError",
    "check_bind",
    "is_loopback",
    "load_token",
]
