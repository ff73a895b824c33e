"""Property-based fuzzing of protocol files through the `insitem` command (issue 7, part 2).

Random mutations of the shipped protocols (protocols/library/*.yaml) - keys deleted, values
swapped between fields, units changed ("40 mV/min" -> "40 mA/min", "40 m", a bare 40),
negative/zero/huge/NaN/inf magnitudes, wrong types, unicode and overlong strings, YAML syntax
broken, keys duplicated, random bytes - are written to a file and given to
``insitem validate FILE`` and ``insitem plan FILE`` in-process (`insitem.cli.main.main`).

Property: the command exits 0, or exits non-zero with one line on stderr per error, each naming
the file (the loader's ``file:line: field: message``); never a traceback, never an exception out
of `main`. A valid mutant whose plan exceeds the dose budget is never started by ``insitem run``.

Examples found by fuzzing that once broke the property are kept as explicit regression cases.
"""

from __future__ import annotations

import copy
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from insitem.cli import main as cli
from insitem.protocols.loader import library_dir

LIBRARY = {p.stem: p.read_text(encoding="utf-8") for p in sorted(library_dir().glob("*.yaml"))}
NAMES = sorted(LIBRARY)
TREES = {name: yaml.safe_load(text) for name, text in LIBRARY.items()}

#: wall-clock bound for one validate/plan call: a plan that would take longer is a hang
CALL_LIMIT_S = 20.0
#: error lines per file (the loader's cap of 50 plus its "... and N more") and characters per line
MAX_ERROR_LINES = 51
MAX_LINE_CHARS = 600


# ---------------------------------------------------------------------------------------------
# Running the command


class Outcome:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    """`insitem ARGV` in-process with a wall-clock alarm: an exception escaping `main` fails."""

    def _timeout(signum: int, frame: Any) -> None:
        raise TimeoutError(f"insitem {' '.join(argv)} took longer than {CALL_LIMIT_S} s")

    capsys.readouterr()
    on_main = threading.current_thread() is threading.main_thread()
    old_handler: Any = None
    old_timer = (0.0, 0.0)
    t0 = time.monotonic()
    if on_main:  # pytest-timeout's own alarm (if armed) is put back afterwards
        old_handler = signal.signal(signal.SIGALRM, _timeout)
        old_timer = signal.setitimer(signal.ITIMER_REAL, CALL_LIMIT_S)
    try:
        code = cli.main(argv)
    finally:
        if on_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            if old_timer[0] > 0:
                signal.setitimer(signal.ITIMER_REAL, max(old_timer[0] - (time.monotonic() - t0), 1e-3), old_timer[1])
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def check_outcome(o: Outcome, path: Path, command: str) -> None:
    """The property: success, or one stderr line per error, each naming the file; no traceback either way."""
    assert isinstance(o.code, int)
    assert "Traceback" not in o.err and "Traceback" not in o.out
    if o.code == 0:
        assert o.err == "", f"insitem {command} succeeded but wrote to stderr: {o.err!r}"
        return
    assert o.code == cli.EXIT_BAD_INPUT, f"insitem {command}: exit {o.code}, stderr {o.err!r}"
    lines = o.err.rstrip("\n").split("\n")
    assert lines and len(lines) <= MAX_ERROR_LINES, f"insitem {command}: expected one line per error, got {o.err!r}"
    for line in lines:
        assert line.strip() and len(line) < MAX_LINE_CHARS, f"insitem {command}: an empty or overlong line: {line[:200]!r}"
        assert str(path) in line, f"insitem {command}: the error does not name the file: {line!r}"


def validate_and_plan(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Outcome, Outcome]:
    v = run_cli(["validate", str(path)], capsys)
    check_outcome(v, path, "validate")
    p = run_cli(["plan", str(path)], capsys)
    check_outcome(p, path, "plan")
    # validate builds the plan too: both accept or both refuse
    assert (v.code == 0) == (p.code == 0), (v.err, p.err)
    if v.code:
        assert v.err.replace("invalid: ", "") == p.err.replace("insitem plan: ", "")
    return v, p


# ---------------------------------------------------------------------------------------------
# Mutations of the parsed YAML tree


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path (keys and list indices), depth first, the root excluded."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(paths_of(v, prefix + (k,)))
    return out


def get(tree: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def put(tree: Any, path: tuple[Any, ...], value: Any) -> None:
    get(tree, path[:-1])[path[-1]] = value


QUANTITY = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*(.*)$")
UNITS = ["V", "mV", "mA", "A", "uA", "nA", "s", "min", "h", "ms", "ns", "fs", "m", "nm", "um", "mV/min", "mA/min", "V/s",
         "eV", "keV", "kV", "e/Å^2", "e/Å^2/s", "e/A^2/s", "Hz", "degC", "", "furlong", "mV/", "/min", "**", "%"]
MAGNITUDES = ["0", "-0", "-1", "-40", "1e-300", "1e300", "1e400", "-1e400", "nan", "inf", "-inf", "NaN", "1e-9",
              "123456789012345678901234567890", "1e30", "9**9**9", "10**400", "2**(9**9)", "0x10", "1_000", "", "--1", "1e", ".", "40.0.0"]

weird_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8),
    st.sampled_from(["", "[/x]", "[bold]", ":smile:", "%s%n", "{0}", "\x00", "\u202e", "Å", "μV", "40 µV",
                     "~", "null", "yes", "- a", "'", '"', "\\", "A" * 5000, "1 V" + " " * 3000]),
)
weird_values = st.one_of(
    weird_scalars,
    st.lists(weird_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["cv", "hold", "rest", "name", "x", "every", ""]), weird_scalars, max_size=2),
)

#: one tree mutation: (kind, path index, second path index, payload)
tree_op = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0), st.none()),
    st.tuples(st.just("swap"), st.integers(0, 10_000), st.integers(0, 10_000), st.none()),
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.just(0), weird_values),
    st.tuples(st.just("unit"), st.integers(0, 10_000), st.integers(0, len(UNITS) - 1), st.sampled_from(MAGNITUDES + [None])),
    st.tuples(st.just("rename"), st.integers(0, 10_000), st.just(0), st.text(max_size=12)),
)


def apply_tree_op(tree: Any, op: tuple[str, int, int, Any]) -> None:
    kind, i, j, payload = op
    paths = paths_of(tree)
    if not paths:
        return
    if kind == "unit":  # only quantity strings ("40 mV/min") are candidates
        paths = [p for p in paths if isinstance(get(tree, p), str) and QUANTITY.match(get(tree, p))] or paths
    path = paths[i % len(paths)]
    if kind == "delete":
        del get(tree, path[:-1])[path[-1]]
    elif kind == "swap":
        other = paths[j % len(paths)]
        if path[: len(other)] == other or other[: len(path)] == path:
            return  # one holds the other
        a, b = get(tree, path), get(tree, other)
        put(tree, path, copy.deepcopy(b))
        put(tree, other, copy.deepcopy(a))
    elif kind == "replace":
        put(tree, path, payload)
    elif kind == "rename":
        parent = get(tree, path[:-1])
        if isinstance(parent, dict):
            parent[payload] = parent.pop(path[-1])
    else:  # unit
        value = get(tree, path)
        m = QUANTITY.match(value) if isinstance(value, str) else None
        magnitude = payload if payload is not None else (m.group(1) if m else "40")
        unit = UNITS[j]
        if payload is None and m is None:
            unit = unit or "V"
        put(tree, path, f"{magnitude} {unit}".strip() if unit else magnitude)


def dump(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False, width=10_000)


# ---------------------------------------------------------------------------------------------
# Mutations of the text


YAML_SPECIAL = [":", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!python/object:os.system ", "!!binary ", "%YAML 1.1\n",
                "---\n", "...\n", "|", ">", "#", "'", '"', "\t", "\n", "  ", "? ", "@", "`", "\x00", "\x85", "\ufeff",
                "<<: *a\n", "!!float ", "!!int ", "!!str ", "!!set ", "!!omap ", "\r"]

text_op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.one_of(st.sampled_from(YAML_SPECIAL), st.text(max_size=6))),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.none()),
    st.tuples(st.just("dupline"), st.integers(0, 10_000), st.none()),  # duplicate key
    st.tuples(st.just("indent"), st.integers(0, 10_000), st.integers(-4, 4)),
)


def apply_text_op(text: str, op: tuple[str, int, Any]) -> str:
    kind, i, arg = op
    if kind == "insert":
        pos = i % (len(text) + 1)
        return text[:pos] + arg + text[pos:]
    if kind == "delete":
        pos = i % (len(text) + 1)
        return text[:pos] + text[pos + arg:]
    if kind == "truncate":
        return text[: i % (len(text) + 1)]
    lines = text.split("\n")
    n = i % len(lines)
    if kind == "dupline":
        return "\n".join(lines[: n + 1] + [lines[n]] + lines[n + 1:])
    # indent
    line = lines[n]
    lines[n] = " " * arg + line if arg >= 0 else line[min(-arg, len(line) - len(line.lstrip(" "))):]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def protocol_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One file path reused by every example of a test (hypothesis runs examples in one test call)."""
    yield tmp_path_factory.mktemp("fuzz") / "mutant.yaml"


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


def _tree_case(name: str, ops: list[tuple[str, int, int, Any]], path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = copy.deepcopy(TREES[name])
    for op in ops:
        apply_tree_op(tree, op)
    path.write_text(dump(tree), encoding="utf-8")
    validate_and_plan(path, capsys)


def _text_case(name: str, ops: list[tuple[str, int, Any]], path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = LIBRARY[name]
    for op in ops:
        text = apply_text_op(text, op)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    validate_and_plan(path, capsys)


# ---------------------------------------------------------------------------------------------
# The properties


def test_shipped_protocols_pass_unchanged(protocol_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Baseline: every shipped protocol validates and plans (the mutants start from valid files)."""
    for name in NAMES:
        protocol_file.write_text(LIBRARY[name], encoding="utf-8")
        v, p = validate_and_plan(protocol_file, capsys)
        assert v.code == 0 and p.code == 0, (name, v.err, p.err)


#: mutants that once escaped as a traceback or hung the command: (protocol, path, new value or
#: ("rename", new key)) and the field the one-line error must name
FOUND = [
    # rich markup in a value crashed the error printer (MarkupError)
    ("si-nanoparticle-hold", ("spectrometer", "windows", 0, "name"), "[/x]", "spectrometer.windows[0].name"),
    ("si-nanoparticle-hold", ("name",), "[bold]:smile:", "name"),
    # a key holding a line break split the error over two lines
    ("ex-situ-lasgtp", ("description",), ("rename", "\n"), "'\\n'"),
    # disc area overflowing / underflowing: OverflowError, ZeroDivisionError
    ("ex-situ-lasgtp", ("beam", "illuminated_diameter"), "1e300 um", "beam.illuminated_diameter"),
    ("ex-situ-lasgtp", ("beam", "illuminated_diameter"), "1e-300 um", "beam.illuminated_diameter"),
    # pint evaluated the exponent as an integer: validate never finished
    ("ex-situ-lasgtp", ("safety", "voltage_max"), "9**9**9 V", "safety.voltage_max"),
    ("ex-situ-lasgtp", ("safety", "voltage_max"), "10**400 V", "safety.voltage_max"),
    # non-finite quantities were accepted (nan passes every `<= 0` check)
    ("si-nanoparticle-hold", ("steps", 0, "hold", "duration"), "nan s", "steps[0].hold.duration"),
    ("si-nanoparticle-hold", ("steps", 0, "hold", "duration"), "1e400 s", "steps[0].hold.duration"),
    # the plan tried to build 6e11 (or 2e29) exposures: plan never finished
    ("si-nanoparticle-hold", ("steps", 0, "hold", "exposures", 0, "every"), "1 ns", "steps[0].hold.exposures[0].every"),
    ("si-nanoparticle-hold", ("steps", 0, "hold", "duration"), "1e30 s", "steps[0].hold.duration"),
]


@pytest.mark.parametrize(("name", "path", "value", "field"), FOUND, ids=[f"{c[1][-1]}={c[2]!r}" for c in FOUND])
def test_found_by_fuzzing(name: str, path: tuple[Any, ...], value: Any, field: str, protocol_file: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    tree = copy.deepcopy(TREES[name])
    if isinstance(value, tuple):
        parent = get(tree, path[:-1])
        parent[value[1]] = parent.pop(path[-1])
    else:
        put(tree, path, value)
    protocol_file.write_text(dump(tree), encoding="utf-8")
    v, _ = validate_and_plan(protocol_file, capsys)
    assert v.code == cli.EXIT_BAD_INPUT
    assert f": {field}: " in v.err, v.err


#: whole texts that once escaped as a traceback: PyYAML raises plain ValueError/IndexError for
#: explicit tags it cannot construct, and RecursionError for deep nesting
FOUND_TEXT = ["!!float ", "name: !!float x\n", "!!float # ex-situ\nname: x\n", "a: !!int 1.5\n",
              "a: !!timestamp 2020-13-45\n", "[" * 20_000 + "]" * 20_000 + "\n", "a:\n" + "  - " * 3000 + "x\n"]


@pytest.mark.parametrize("text", FOUND_TEXT, ids=[repr(t[:20]) for t in FOUND_TEXT])
def test_found_by_fuzzing_yaml(text: str, protocol_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    protocol_file.write_text(text, encoding="utf-8")
    v, _ = validate_and_plan(protocol_file, capsys)
    assert v.code == cli.EXIT_BAD_INPUT


@FAST
@given(name=st.sampled_from(NAMES), ops=st.lists(tree_op, min_size=1, max_size=4))
def test_tree_mutations_give_one_line_errors(name: str, ops: list[Any], protocol_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _tree_case(name, ops, protocol_file, capsys)


@FAST
@given(name=st.sampled_from(NAMES), ops=st.lists(text_op, min_size=1, max_size=4))
def test_text_mutations_give_one_line_errors(name: str, ops: list[Any], protocol_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _text_case(name, ops, protocol_file, capsys)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_give_one_line_errors(data: bytes, protocol_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    protocol_file.write_bytes(data)
    validate_and_plan(protocol_file, capsys)


@pytest.mark.slow
@SLOW
@given(name=st.sampled_from(NAMES), ops=st.lists(tree_op, min_size=1, max_size=6))
def test_tree_mutations_many(name: str, ops: list[Any], protocol_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tree_case(name, ops, protocol_file, capsys)


@pytest.mark.slow
@SLOW
@given(name=st.sampled_from(NAMES), ops=st.lists(text_op, min_size=1, max_size=6))
def test_text_mutations_many(name: str, ops: list[Any], protocol_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _text_case(name, ops, protocol_file, capsys)


# ---------------------------------------------------------------------------------------------
# A run over the dose budget is never started


def _plan_dose_e_per_A2(name: str) -> float:
    from insitem.protocols.loader import load_and_plan

    _, plan = load_and_plan(name)
    return plan.dose_e_per_m2 / 1e20


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), fraction=st.floats(min_value=1e-3, max_value=0.99),
       beam_scale=st.sampled_from([1.0, 0.5, 0.1]))
def test_run_over_the_dose_budget_is_not_started(name: str, fraction: float, beam_scale: float,
                                                 tmp_path_factory: pytest.TempPathFactory,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A valid protocol whose plan exceeds safety.max_total_dose: `insitem run` refuses before
    building the rig or creating a run file, in one line naming the field."""
    work = tmp_path_factory.mktemp("dose")
    tree = copy.deepcopy(TREES[name])
    current = QUANTITY.match(tree["beam"]["current"])
    assert current is not None
    tree["beam"]["current"] = f"{float(current.group(1)) * beam_scale:g} {current.group(2)}"
    path = work / "mutant.yaml"
    path.write_text(dump(tree), encoding="utf-8")
    dose = _plan_dose_e_per_A2(str(path))
    tree["safety"]["max_total_dose"] = f"{dose * fraction:.6g} e/Å^2"
    path.write_text(dump(tree), encoding="utf-8")
    out = work / "runs"
    o = run_cli(["run", str(path), "--sim", "--out", str(out), "--no-progress", "--no-figures"], capsys)
    check_outcome(o, path, "run")
    assert o.code == cli.EXIT_BAD_INPUT
    assert "safety.max_total_dose" in o.err and "over the budget" in o.err
    assert not out.exists() or not any(out.rglob("*.h5")), "a run file was created for a refused plan"
