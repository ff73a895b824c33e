"""`python -m bench` lists the benches; `python -m bench NAME [ARGS...]` runs one.

NAME is a file's name in bench/ without `bench_` and `.py` (`realtime` runs bench_realtime.py;
files without the prefix, such as tem_roundtrip.py, go by their plain name). The file runs
exactly as `python bench/FILE.py ARGS...` would: as `__main__`, with `sys.argv` set to the file
and ARGS and bench/ first on `sys.path`. An unknown NAME is one line on stderr and exit 2.
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def benches() -> dict[str, Path]:
    """Bench name -> file, sorted by name."""
    out: dict[str, Path] = {}
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = path.stem.removeprefix("bench_")
        out[name] = path
    return dict(sorted(out.items()))


def summary(path: Path) -> str:
    """The first paragraph of the file's docstring on one line, at most 100 characters."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except SyntaxError:
        return ""
    text = " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""
    return text if len(text) <= 100 else text[:99].rstrip() + "…"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    table = benches()
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: python -m bench NAME [ARGS...]   (ARGS go to the bench; NAME --help shows them)")
        width = max(map(len, table), default=0)
        for name, path in table.items():
            print(f"  {name:{width}}  {summary(path)}")
        return 0
    name, args = argv[0], argv[1:]
    path = table.get(name) or table.get(name.removeprefix("bench_").removesuffix(".py"))
    if path is None:
        print(f"bench: unknown bench {name!r}; one of: {', '.join(table)}", file=sys.stderr)
        return 2
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(BENCH_DIR))
    runpy.run_path(str(path), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
