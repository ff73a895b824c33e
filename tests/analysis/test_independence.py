"""The analysis is independent of the generator (issue 14.4): analysis/ imports nothing from
simulators/ and shares no numeric tables with it, so agreement on dry runs is not built in.

Numeric tables are tuple/list literals of two or more numbers (peak positions, widths, line tables)
anywhere in a module's source. The analysis's windows are its own choices; a shared sequence of
three or more numbers, or a shared pair of non-round numbers, would be a table copied from the
simulator (e.g. the §1.8 Ti3+ lines (457.3, 2.0), (463.3, 2.6) that titanium.py used to build its
Ti3+ reference from).
"""

from __future__ import annotations

import ast
from pathlib import Path

import insitem.analysis
import insitem.simulators

ANALYSIS = Path(insitem.analysis.__file__).parent
SIMULATORS = Path(insitem.simulators.__file__).parent


def _modules(root: Path) -> list[tuple[Path, ast.Module]]:
    return [(f, ast.parse(f.read_text(), str(f))) for f in sorted(root.rglob("*.py"))]


def _number(node: ast.AST) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return None if v is None else -v
    return None


def _tables(tree: ast.Module) -> set[tuple[float, ...]]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List)):
            nums = [_number(e) for e in node.elts]
            if len(nums) >= 2 and all(v is not None for v in nums):
                out.add(tuple(round(v, 6) for v in nums))  # type: ignore[arg-type]
    return out


def _round(v: float) -> bool:
    """Numbers any two codes share by chance: halves up to 10, and multiples of 5 (window edges like 450.0)."""
    return (abs(v) <= 10 and 2 * v == int(2 * v)) or (v == int(v) and abs(v) % 5 == 0)


def _literals(tree: ast.Module) -> set[float]:
    return {round(v, 6) for v in (_number(n) for n in ast.walk(tree)) if v is not None}


def _copied(analysis_tables: set[tuple[float, ...]], sim_tables: set[tuple[float, ...]], sim_literals: set[float]) -> set:
    """Analysis tables that copy the simulator: the same sequence of 3+ numbers, or a table holding 2+
    non-round numbers that occur as literals in simulators/ (a line (centre, width, ratio) rebuilt from
    the simulator's parameters)."""
    out = set()
    for tab in analysis_tables:
        odd = [v for v in tab if not _round(v) and v in sim_literals]
        if (len(tab) >= 3 and tab in sim_tables) or len(odd) >= 2:
            out.add(tab)
    return out


def test_analysis_imports_nothing_from_simulators() -> None:
    offenders = []
    for f, tree in _modules(ANALYSIS):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "insitem.simulators" in node.value:
                names = [node.value]  # importlib.import_module("insitem.simulators...")
            else:
                continue
            if any(n.startswith(("insitem.simulators", "simulators")) or "..simulators" in n for n in names):
                offenders.append(f"{f.name}:{getattr(node, 'lineno', '?')}")
    assert not offenders, offenders


def test_analysis_shares_no_numeric_tables_with_simulators() -> None:
    mods = _modules(SIMULATORS)
    sim_tables = set().union(*(_tables(t) for _, t in mods))
    sim_literals = set().union(*(_literals(t) for _, t in mods))
    shared = {f.name: sorted(c) for f, tree in _modules(ANALYSIS) if (c := _copied(_tables(tree), sim_tables, sim_literals))}
    assert not shared, f"numeric tables shared with simulators/: {shared}"


def test_the_check_catches_the_line_tables_titanium_py_used_to_share() -> None:
    """The check itself, on the tables analysis/titanium.py held before issue 14 against the simulator's
    §1.8 parameters of that time (simulators/eels.py): line tables of both are found, a window pair is not."""
    old_analysis = ast.parse(
        "_TI4_LINES = ((457.0, 0.9, _T2G), (459.0, 1.5, _EG), (463.0, 1.6, 1.30 * _T2G), (465.0, 2.2, 1.30 * _EG))\n"
        "_TI3_LINES = ((457.3, 2.0, 1.0), (463.3, 2.6, 1.25))\nWINDOW = (452.0, 471.0)\n")
    old_sim = ast.parse(
        "ti4_peaks_eV = (457.0, 459.0, 463.0, 465.0)\nti4_fwhm_eV = (0.9, 1.5, 1.6, 2.2)\n"
        "ti4_L2_L3 = 1.30\nti3_shift_eV = -1.7\nti3_fwhm_eV = (2.0, 2.6)\nti3_L2_L3 = 1.25\n")
    found = _copied(_tables(old_analysis), _tables(old_sim), _literals(old_sim))
    assert (463.3, 2.6, 1.25) in found
    assert (452.0, 471.0) not in found
