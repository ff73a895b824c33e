"""Load protocol files: YAML -> Protocol, with one-line errors that name the file, line and field.

A protocol is given as a path or as the name of a shipped protocol (protocols/library/NAME.yaml).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from insitem.drivers.errors import ProtocolError
from insitem.protocols.schema import Protocol

if TYPE_CHECKING:
    from insitem.protocols.plan import Plan

LIBRARY_PACKAGE = "insitem.protocols"


def library_dir() -> Path:
    """Folder of the shipped protocols."""
    return Path(str(resources.files(LIBRARY_PACKAGE) / "library"))


def library_names() -> list[str]:
    return sorted(p.stem for p in library_dir().glob("*.yaml"))


def resolve(name_or_path: str) -> Path:
    """A shipped protocol name or a file path -> the file. Raises ProtocolError if neither."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProtocolError(f"{name_or_path}: no such file")
        return path
    shipped = library_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ProtocolError(
        f"{name_or_path}: not a file and not a shipped protocol (shipped: {', '.join(library_names())})"
    )


def load(name_or_path: str) -> Protocol:
    """Read and validate a protocol. Every problem becomes one ProtocolError line."""
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read: {exc}") from None
    return loads(text, source=str(path))


def loads(text: str, source: str = "<protocol>") -> Protocol:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProtocolError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ProtocolError(f"{source}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # PyYAML's constructors for explicit tags
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ProtocolError(f"{source}: invalid YAML: a tagged value (!!float, !!int, !!timestamp ...) cannot be read: {detail}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{source}: expected a mapping of protocol fields at the top level")
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(format_validation_error(exc, source, node)) from None


def format_validation_error(exc: ValidationError, source: str, node: Any) -> str:
    """The first error of a pydantic ValidationError as `file:line: field: message`."""
    err = exc.errors(include_url=False)[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in ("function-after", "function-before"))]
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif err["type"] == "missing":
        msg = "required field missing"
    path = _loc_to_path(loc)
    # model validators name the field at the start of their message: extend the path with it
    m = re.match(r"^([A-Za-z_]+(?:\[\d+\])?(?:\.[A-Za-z_]+(?:\[\d+\])?)*)\s*:", msg)
    if m:
        path = f"{path}.{m.group(1)}" if path else m.group(1)
        msg = msg[m.end() :].strip()
    line = _line_of(node, path)
    where = f"{source}:{line}" if line else source
    value = ""
    if err["type"] not in ("missing", "extra_forbidden") and "input" in err and not isinstance(err["input"], (dict, list)):
        value = f" (got {err['input']!r})"
    return f"{where}: {path or 'protocol'}: {msg}{value}"


def _loc_to_path(loc: list[Any]) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            key = str(p)  # a key with line breaks or control characters is quoted: errors stay one line
            out += ("." if out else "") + (key if key.isprintable() else repr(key))
    return out


def _line_of(node: Any, path: str) -> int | None:
    """1-based line of the deepest YAML node reachable along `path` (a.b[2].c)."""
    if node is None or not path:
        return None
    line = node.start_mark.line + 1
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if token.startswith("["):
            idx = int(token[1:-1])
            if isinstance(node, yaml.SequenceNode) and idx < len(node.value):
                node = node.value[idx]
            else:
                break
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == token:
                    node = value
                    line = key.start_mark.line + 1
                    break
            else:
                break
        else:
            break
        line = node.start_mark.line + 1 if not isinstance(node, yaml.MappingNode) else line
    return line


def load_and_plan(name_or_path: str) -> tuple[Protocol, "Plan"]:
    """Load a protocol and build its plan; plan errors name the file and line as load errors do."""
    from insitem.protocols.plan import make_plan

    path = resolve(name_or_path)
    protocol = load(name_or_path)
    try:
        return protocol, make_plan(protocol)
    except ProtocolError as exc:
        msg = str(exc)
        m = re.match(r"^([A-Za-z_]+(?:\[\d+\])?(?:\.[A-Za-z_]+(?:\[\d+\])?)*)\s*:", msg)
        line = None
        if m:
            node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
            line = _line_of(node, m.group(1))
        raise ProtocolError(f"{path}:{line}: {msg}" if line else f"{path}: {msg}") from None
