"""SCPI codec shared by every SCPI client (drivers) and every SCPI server (emulators, bridges).

Client side: number formatting for commands, reply parsing (numbers, booleans, error-queue
entries). Server side: `ScpiParser`, a command tree that parses program messages the way
IEEE 488.2 / SCPI-1999 instruments do (design.md §5, "SCPI as the instruments parse it"):

* headers are case-insensitive; each node matches its short form (the upper-case part of the
  mnemonic as written in the manual, ``VOLT``) or its long form (``VOLTAGE``), nothing in between;
* optional nodes written ``[:LEVel]`` may be left out; a node may carry a numeric suffix,
  optional ``SOURce[1]`` or required ``CALCulate3``;
* several program message units share one line separated by ``;``; a unit without a leading
  ``:`` continues from the path of the previous unit (SCPI-1999 vol. 1 §6.2.4), common
  commands (``*IDN?``) leave the path alone;
* arguments are separated by ``,``; quoted strings (``"..."`` or ``'...'``, doubled quote as
  escape) may contain ``,`` and ``;``;
* queries are answered in order; the answers of one program message are joined by ``;`` into
  one response message (IEEE 488.2 §8.4.1);
* errors are queued, never raised at the client: -102 Syntax error, -113 Undefined header,
  -222 Data out of range, -224 Illegal parameter value, -109 Missing parameter, -108 Parameter
  not allowed, -104 Data type error, -350 Queue overflow.

Hand-written because no maintained Python package implements the *server* side of SCPI header
matching (PyVISA and PyMeasure are clients; the Rust `scpi` crate is not usable from Python).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

# ---------------------------------------------------------------------------------------------
# Standard error codes (SCPI-1999 vol. 2 §21.8)

NO_ERROR = (0, "No error")
ERROR_MESSAGES: dict[int, str] = {
    -100: "Command error",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -200: "Execution error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -225: "Out of memory",
    -230: "Data corrupt or stale",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -410: "Query INTERRUPTED",
    # Keithley 2400 device-specific errors (2400 manual, appendix B)
    800: "Illegal with storage active",
    803: "Output disabled",
}

#: SCPI "not a number" / overflow value returned by Keithley SourceMeters (physics.md §4.2).
SCPI_NAN = 9.91e37
#: anything at or above this magnitude is an overflow marker, not a measurement
OVERFLOW_THRESHOLD = 9.9e37


class ScpiError(Exception):
    """Raised inside a server-side handler; the parser queues (code, message) and carries on."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        base = ERROR_MESSAGES.get(code, "Error")
        self.message = f"{base}; {detail}" if detail else base
        super().__init__(f"{code},{self.message}")


# ---------------------------------------------------------------------------------------------
# Client side: formatting and parsing


def format_number(value: float) -> str:
    """Format a number as SCPI <NRf> for a command: up to 10 significant digits, no padding.

    10 digits keep 0.1 uV resolution on a 200 V range, finer than any SourceMeter programs
    (physics.md §4.4: 50 uV programming resolution on the 2 V range).
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot send non-finite number {value!r} to an instrument")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".10g")


def format_nr3(value: float, digits: int = 6, plus: bool = True) -> str:
    """Format a response number as <NR3> the way Keithley instruments print it: ``+1.500000E+00``."""
    if math.isnan(value):
        value = SCPI_NAN
    text = f"{value:+.{digits}E}" if plus else f"{value:.{digits}E}"
    return text


def parse_floats(reply: str, expected: int | None = None) -> list[float]:
    """Parse a comma-separated list of numbers. Raise ValueError on anything else.

    `expected`: exact count required (None = any). Overflow markers (|x| >= 9.9e37) are kept
    as they are; callers decide what an overflow means.
    """
    parts = reply.strip().split(",")
    if expected is not None and len(parts) != expected:
        raise ValueError(f"expected {expected} comma-separated values, got {len(parts)} in {reply!r}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"not a list of numbers: {reply!r}") from None


def parse_bool(reply: str) -> bool:
    """Parse a SCPI boolean reply (``0``/``1``, ``ON``/``OFF``)."""
    text = reply.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise ValueError(f"not a boolean reply: {reply!r}")


_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"(.*)"\s*$', re.DOTALL)


def parse_error(reply: str) -> tuple[int, str]:
    """Parse one error-queue entry ``<code>,"<message>"`` into (code, message).

    Keithley 2450-class instruments may append ``;<severity>;<timestamp>`` inside the quotes;
    only the message before the first ``;`` is kept. Raise ValueError on anything else.
    """
    m = _ERROR_RE.match(reply)
    if m is None:
        raise ValueError(f"not an error-queue entry: {reply!r}")
    return int(m.group(1)), m.group(2).split(";", 1)[0]


def format_error(code: int, message: str) -> str:
    """Server side: the error-queue entry as sent on the wire."""
    return f'{code},"{message}"'


def quote(text: str) -> str:
    """Quote a string argument (doubling embedded quotes)."""
    return '"' + text.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------
# Server side: argument helpers used by handlers


def unquote(token: str) -> str:
    """Strip one level of quotes from a string argument; unquoted tokens pass through."""
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        q = token[0]
        return token[1:-1].replace(q + q, q)
    return token


def arg_float(
    token: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    default: float | None = None,
) -> float:
    """Parse a numeric argument with MINimum/MAXimum/DEFault; -104 if not a number, -222 if outside [lo, hi]."""
    t = token.strip().upper()
    if t in ("MIN", "MINIMUM") and math.isfinite(lo):
        return lo
    if t in ("MAX", "MAXIMUM") and math.isfinite(hi):
        return hi
    if t in ("DEF", "DEFAULT") and default is not None:
        return default
    try:
        value = float(t)
    except ValueError:
        raise ScpiError(-104, f"expected a number, got {token!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ScpiError(-222, f"{token} outside [{lo:g}, {hi:g}]")
    return value


def arg_int(token: str, lo: int, hi: int) -> int:
    """Integer argument in [lo, hi]."""
    value = arg_float(token, lo, hi)
    if not float(value).is_integer():
        raise ScpiError(-224, f"expected an integer, got {token!r}")
    return int(value)


def arg_bool(token: str) -> bool:
    """Boolean argument: ON/OFF/1/0."""
    t = token.strip().upper()
    if t in ("ON", "1"):
        return True
    if t in ("OFF", "0"):
        return False
    raise ScpiError(-224, f"expected ON|OFF|1|0, got {token!r}")


def arg_choice(token: str, choices: Sequence[str]) -> str:
    """Character-data argument matched short/long form against `choices` (written ``HIMPedance``).

    Returns the short form (upper-case part). -224 when nothing matches.
    """
    t = unquote(token.strip()).upper()
    for c in choices:
        short = "".join(ch for ch in c if not ch.islower())
        if t == short or t == c.upper():
            return short
    raise ScpiError(-224, f"{token!r} not one of {', '.join(choices)}")


def split_arguments(text: str) -> list[str]:
    """Split an argument string on commas outside quotes; -102 on an unterminated quote."""
    args: list[str] = []
    buf: list[str] = []
    quote_ch = ""
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote_ch:
            buf.append(ch)
            if ch == quote_ch:
                if i + 1 < n and text[i + 1] == quote_ch:  # doubled quote = literal quote
                    buf.append(ch)
                    i += 1
                else:
                    quote_ch = ""
        elif ch in "\"'":
            quote_ch = ch
            buf.append(ch)
        elif ch == ",":
            args.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quote_ch:
        raise ScpiError(-102, "unterminated string")
    last = "".join(buf).strip()
    if args or last:
        args.append(last)
    if any(a == "" for a in args):
        raise ScpiError(-102, "empty argument")
    return args


def split_units(message: str) -> list[str]:
    """Split a program message into units on ``;`` outside quotes; -102 on an unterminated quote."""
    units: list[str] = []
    buf: list[str] = []
    quote_ch = ""
    for ch in message:
        if quote_ch:
            if ch == quote_ch:
                quote_ch = ""  # a doubled quote re-opens on the next character
            buf.append(ch)
        elif ch in "\"'":
            quote_ch = ch
            buf.append(ch)
        elif ch == ";":
            units.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote_ch:
        raise ScpiError(-102, "unterminated string")
    units.append("".join(buf))
    return units


# ---------------------------------------------------------------------------------------------
# Server side: command tree


@dataclass(frozen=True)
class _Node:
    short: str  # upper-case short form, e.g. "VOLT"
    long: str  # upper-case long form, e.g. "VOLTAGE"
    optional: bool  # node may be left out: [:LEVel]
    suffix: int | None  # numeric suffix the node carries (None = takes none)
    suffix_optional: bool  # SOURce[1]: suffix may be omitted

    def matches(self, mnemonic: str, suffix: str) -> bool:
        if mnemonic != self.short and mnemonic != self.long:
            return False
        if not suffix:
            return self.suffix is None or self.suffix_optional
        return self.suffix is not None and int(suffix) == self.suffix


RESOLVE_CACHE_SIZE = 4096  # resolved headers kept; the cache is emptied when full (bounded memory)
_HEADER_TOKEN_RE = re.compile(r"^([A-Za-z]+)(\d*)$")
_HEADER_RE = re.compile(r"^(\*[A-Za-z]+\??|:?[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][A-Za-z0-9]*)*\??)$")
_PATTERN_NODE_RE = re.compile(r"(\[)?:([A-Za-z]+)(?:\[(\d+)\]|(\d+))?(\]*)")


def compile_pattern(pattern: str) -> tuple[_Node, ...]:
    """Compile a manual-style header (``:SOURce[1]:VOLTage[:LEVel][:IMMediate]``) into nodes."""
    text = pattern if pattern.startswith((":", "[")) else ":" + pattern
    nodes = []
    pos = 0
    depth = 0  # nested optionals ([:CURRent[:DC]]) are flattened: each inner node is optional
    while pos < len(text):
        m = _PATTERN_NODE_RE.match(text, pos)
        if m is None:
            raise ValueError(f"cannot compile SCPI pattern {pattern!r} at {text[pos:]!r}")
        opening, mnem, opt_suffix, req_suffix, closing = m.groups()
        depth += bool(opening)
        short = "".join(ch for ch in mnem if ch.isupper())
        suffix = int(opt_suffix or req_suffix) if (opt_suffix or req_suffix) else None
        nodes.append(_Node(short, mnem.upper(), depth > 0, suffix, opt_suffix is not None))
        depth -= len(closing)
        if depth < 0:
            raise ValueError(f"unbalanced ']' in SCPI pattern {pattern!r}")
        pos = m.end()
    if depth:
        raise ValueError(f"unbalanced '[' in SCPI pattern {pattern!r}")
    return tuple(nodes)


def _match(nodes: tuple[_Node, ...], tokens: Sequence[tuple[str, str]]) -> bool:
    """True when the header tokens match the node list (optional nodes may be skipped)."""
    if not nodes:
        return not tokens
    head = nodes[0]
    if tokens and head.matches(*tokens[0]) and _match(nodes[1:], tokens[1:]):
        return True
    return head.optional and _match(nodes[1:], tokens)


SetHandler = Callable[[list[str]], None]
QueryHandler = Callable[[list[str]], str]


@dataclass
class _Command:
    pattern: str
    nodes: tuple[_Node, ...]
    on_set: SetHandler | None
    on_query: QueryHandler | None
    n_args: tuple[int, int]  # (min, max) arguments for the set form


@dataclass
class ScpiParser:
    """Server-side SCPI parser with its error queue.

    Register commands with `add`, then feed each received program message (one line, without
    its terminator) to `execute`, which returns the response message (or None when the line
    held no query). Not thread-safe by itself: the emulator serialises calls.
    """

    queue_size: int = 10  # Keithley 2400 error queue depth [S:K2400UM]; -350 when full
    #: accept a colon before a common command (``:*RST`` = ``*RST``), as Keithley SourceMeters do
    #: (docs/decisions/0016); IEEE 488.2 itself has no colon there
    colon_common: bool = False
    _commands: list[_Command] = field(default_factory=list)
    _common: dict[str, _Command] = field(default_factory=dict)
    _cache: dict[tuple[str, ...], _Command | None] = field(default_factory=dict)
    errors: deque[tuple[int, str]] = field(default_factory=deque)

    def add(
        self,
        pattern: str,
        on_set: SetHandler | None = None,
        on_query: QueryHandler | None = None,
        n_args: tuple[int, int] = (1, 1),
    ) -> None:
        """Register a header. `on_set(args)` for the command form, `on_query(args)` for ``?``."""
        if pattern.startswith("*"):
            self._common[pattern.upper()] = _Command(pattern, (), on_set, on_query, n_args)
            return
        self._commands.append(_Command(pattern, compile_pattern(pattern), on_set, on_query, n_args))
        self._cache.clear()

    def add_many(self, rows: Iterable[tuple]) -> None:
        """Register a table of (pattern, on_set, on_query[, n_args]) rows."""
        for row in rows:
            self.add(*row)

    # -- error queue ------------------------------------------------------------------------
    def push_error(self, code: int, message: str | None = None) -> None:
        """Queue an error (oldest first). A full queue replaces its last entry with -350."""
        entry = (code, message or ERROR_MESSAGES.get(code, "Error"))
        if len(self.errors) >= self.queue_size:
            self.errors[-1] = (-350, ERROR_MESSAGES[-350])
            return
        self.errors.append(entry)

    def pop_error(self) -> tuple[int, str]:
        return self.errors.popleft() if self.errors else NO_ERROR

    # -- parsing ----------------------------------------------------------------------------
    def resolve(self, header: str) -> tuple[_Command | None, bool]:
        """Find the command for an absolute header (``:SOUR:VOLT?``); (None, is_query) if undefined."""
        is_query = header.endswith("?")
        body = header[:-1] if is_query else header
        if body.startswith("*"):
            return self._common.get(body.upper()), is_query
        tokens = tuple(body.lstrip(":").upper().split(":"))
        if tokens in self._cache:
            return self._cache[tokens], is_query
        if len(self._cache) >= RESOLVE_CACHE_SIZE:  # clients can send endless distinct junk headers
            self._cache.clear()
        split = []
        for tok in tokens:
            m = _HEADER_TOKEN_RE.match(tok)
            if m is None:
                self._cache[tokens] = None
                return None, is_query
            split.append((m.group(1), m.group(2)))
        found = next((c for c in self._commands if _match(c.nodes, split)), None)
        self._cache[tokens] = found
        return found, is_query

    def execute(self, message: str) -> str | None:
        """Run one program message; return the joined answers of its queries, or None."""
        answers: list[str] = []
        try:
            units = split_units(message)
        except ScpiError as exc:
            self.push_error(exc.code, exc.message)
            return None
        path: list[str] = []  # nodes of the previous unit minus its leaf (SCPI current path)
        for unit in units:
            unit = unit.strip()
            if not unit:
                continue
            header, _, arg_text = unit.partition(" ")
            if "\t" in header:
                header, _, more = header.partition("\t")
                arg_text = more + " " + arg_text
            if self.colon_common and header.startswith(":*"):
                header = header[1:]
            try:
                if not _HEADER_RE.match(header):
                    raise ScpiError(-102, f"bad header {header!r}")
                if header.startswith("*"):
                    absolute = header
                elif header.startswith(":"):
                    absolute = header
                else:
                    absolute = ":" + ":".join(path + [header]) if path else ":" + header
                cmd, is_query = self.resolve(absolute)
                if cmd is None and not header.startswith((":", "*")) and path:
                    cmd, is_query = self.resolve(":" + header)  # lenient: fall back to the root
                    absolute = ":" + header
                if cmd is None:
                    raise ScpiError(-113, header)
                if not header.startswith("*"):
                    path = absolute.lstrip(":").rstrip("?").split(":")[:-1]
                args = split_arguments(arg_text)
                if is_query:
                    if cmd.on_query is None:
                        raise ScpiError(-113, f"{header} has no query form")
                    if args and header.startswith("*"):
                        raise ScpiError(-108, header)  # IEEE 488.2 common queries take no parameters
                    answers.append(cmd.on_query(args))
                else:
                    if cmd.on_set is None:
                        raise ScpiError(-113, f"{header} is query-only")
                    lo, hi = cmd.n_args
                    if len(args) < lo:
                        raise ScpiError(-109, header)
                    if len(args) > hi:
                        raise ScpiError(-108, header)
                    cmd.on_set(args)
            except ScpiError as exc:
                self.push_error(exc.code, exc.message)
        return ";".join(answers) if answers else None
