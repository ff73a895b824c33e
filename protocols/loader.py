"""Load protocol files: YAML -> Protocol, with one-line errors that name the file, line and field.

A protocol is given as a path or as the name of a shipped protocol (protocols/library/NAME.yaml).
"""

from __future__ import annotations

import difflib
import re
import typing
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from insitem.drivers.errors import ProtocolError
from insitem.protocols.schema import STEP_KINDS, UNKNOWN_STEP, Protocol
from insitem.protocols.units import quote

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


MAX_FILE_CHARS = 1_000_000  # a protocol is a few kB; the cap bounds the time spent on any file
MAX_VALUES = 200_000  # scalars, lists and mappings after aliases are expanded ('billion laughs')
MAX_ERRORS = 50  # error lines reported per file


class ProtocolErrors(ProtocolError):
    """Every problem found in one protocol file: `lines`, one `file:line: field: message` each."""

    def __init__(self, lines: list[str]) -> None:
        if len(lines) > MAX_ERRORS:
            lines = [*lines[:MAX_ERRORS], f"... and {len(lines) - MAX_ERRORS} more errors"]
        self.lines = lines
        super().__init__("\n".join(lines))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing duplicate keys and merge keys (`<<`).

    With plain YAML the last of two equal keys wins, so `current_compliance: 1 uA` followed by
    `current_compliance: 1 A` would silently loosen a limit; a merge key lets a later key override
    a merged one the same way. Both are recorded in `problems` as (line, message), all of them.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[tuple[int, str]] = []

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                self.problems.append((key.start_mark.line + 1, "merge keys (<<) are not allowed in protocols: write each field out"))
        node.value = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # unhashable keys are refused by the constructor itself
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue
            if first is None:
                seen[key] = line
            else:
                self.problems.append((line, f"duplicate key {quote(key)}: first given at line {first}; each key may appear once"))
        return super().construct_mapping(node, deep=deep)


def _too_many_values(data: Any) -> bool:
    """More than MAX_VALUES nodes in `data` (aliases counted each time they are used); stops early."""
    budget = MAX_VALUES
    stack = [data]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_yaml(text: str, source: str = "<protocol>") -> tuple[Any, Any]:
    """YAML text -> (data, composed node for line numbers). Raises ProtocolError(s) with lines."""
    if len(text) > MAX_FILE_CHARS:
        raise ProtocolError(f"{source}: {len(text)} characters: a protocol file holds at most {MAX_FILE_CHARS}")
    loader: _UniqueKeyLoader | None = None
    try:
        loader = _UniqueKeyLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProtocolError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ProtocolError(f"{source}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # PyYAML's constructors for explicit tags
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        raise ProtocolError(f"{source}: invalid YAML: a tagged value (!!float, !!int, !!timestamp ...) cannot be read: {detail}") from None
    finally:
        if loader is not None:
            loader.dispose()
    assert loader is not None
    if loader.problems:
        raise ProtocolErrors([f"{source}:{line}: {msg}" for line, msg in sorted(loader.problems)])
    if _too_many_values(data):
        raise ProtocolError(f"{source}: more than {MAX_VALUES} values once aliases (*name) are expanded")
    return data, node


def loads(text: str, source: str = "<protocol>") -> Protocol:
    data, node = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ProtocolError(f"{source}: expected a mapping of protocol fields at the top level")
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolErrors(format_validation_errors(exc, source, node)) from None


def format_validation_errors(exc: ValidationError, source: str, node: Any) -> list[str]:
    """Every error of a pydantic ValidationError as `file:line: field: message`, in file order."""
    errors = exc.errors(include_url=False)
    unknown: dict[str, list[tuple[str, str | None]]] = {}  # parent path -> [(key, nearest known key)]
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = _clean_loc(err["loc"])
            known = _known_keys(loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6) if known else []
            unknown.setdefault(_loc_to_path(loc[:-1]), []).append((str(loc[-1]), near[0] if near else None))
    lines: list[tuple[int, str]] = []
    for err in errors:
        loc = _clean_loc(err["loc"])
        if err["type"] == "missing":
            parent = _loc_to_path(loc[:-1])
            if any(near == loc[-1] for _, near in unknown.get(parent, [])):
                continue  # reported with the misspelt key
        for path, msg in _messages(err, loc, unknown):
            line = _line_of(node, path)
            lines.append((line or 0, f"{source}:{line}: {path or 'protocol'}: {msg}" if line else f"{source}: {path or 'protocol'}: {msg}"))
    lines.sort(key=lambda item: item[0])
    return [text for _, text in lines]


def _clean_loc(loc: Any) -> list[Any]:
    """pydantic's error location as the path in the file: validator names and union tags dropped."""
    out = [p for p in loc if not (isinstance(p, str) and (p in ("function-after", "function-before") or p.startswith("function-")))]
    # a steps entry is a union tagged by its kind: ('steps', 0, 'cv', 'cv', ...) -> ('steps', 0, 'cv', ...)
    if len(out) >= 3 and out[0] == "steps" and isinstance(out[1], int) and isinstance(out[2], str):
        if out[2] == UNKNOWN_STEP or (len(out) >= 4 and out[3] == out[2]):
            del out[2]
    return out


def _messages(err: Any, loc: list[Any], unknown: dict[str, list[tuple[str, str | None]]]) -> list[tuple[str, str]]:
    """(field path, message) pairs of one pydantic error; a model validator may give several lines."""
    path = _loc_to_path(loc)
    if err["type"] == "extra_forbidden":
        parent = _loc_to_path(loc[:-1])
        near = dict(unknown.get(parent, [])).get(str(loc[-1]))
        if near:
            required = " (a required field)" if _is_required(loc[:-1], near) else ""
            return [(path, f"unknown key: did you mean {near}{required}?")]
        known = _known_keys(loc[:-1])
        return [(path, "unknown key" + (f" (known here: {', '.join(known)})" if known and len(known) <= 12 else " (check the spelling)"))]
    if err["type"] == "missing":
        return [(path, "required field missing")]
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    out = []
    for part in msg.split("\n"):
        sub = path
        # model validators name the field at the start of each line: extend the path with it
        m = _FIELD_PREFIX.match(part)
        if m:
            sub = f"{path}.{m.group(1)}" if path else m.group(1)
            part = part[m.end():].strip()
        out.append((sub, part + _got(err)))
    return out


_FIELD_PREFIX = re.compile(r"^([A-Za-z_]+(?:\[\d+\])*(?:\.[A-Za-z_]+(?:\[\d+\])*)*)\s*:")


def _got(err: Any) -> str:
    """` (got VALUE)` for pydantic's own messages, which do not quote the value; ours already do."""
    if err["type"] in ("value_error", "assertion_error") or "input" not in err or isinstance(err["input"], (dict, list)):
        return ""
    value = err["input"]
    if isinstance(value, bool) and err["type"] in ("int_type", "float_type"):
        return f" (got {str(value).lower()}: true/false is not a number)"
    return f" (got {quote(value)})"


def _model_at(loc: list[Any]) -> Any:
    """The pydantic model class at `loc` in the Protocol schema, or None."""
    model: Any = Protocol
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if i == 2 and loc[0] == "steps" and part in STEP_KINDS:  # a steps entry: the kind's model
            model = STEP_KINDS[part]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _model_in(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """The first pydantic model inside an annotation (list[X], X | None, Annotated[...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _known_keys(loc: list[Any]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _is_required(loc: list[Any], key: str) -> bool:
    model = _model_at(loc)
    return bool(model is not None and key in model.model_fields and model.model_fields[key].is_required())


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
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read: {exc}") from None
    return loads_and_plan(text, str(path))


def loads_and_plan(text: str, source: str = "<protocol>") -> tuple[Protocol, "Plan"]:
    """`loads` and the plan; plan errors name `source` and the line as load errors do."""
    from insitem.protocols.plan import make_plan

    protocol = loads(text, source=source)
    try:
        return protocol, make_plan(protocol)
    except ProtocolError as exc:
        _, node = parse_yaml(text, source)
        lines = []
        for msg in str(exc).split("\n"):
            m = _FIELD_PREFIX.match(msg)
            line = _line_of(node, m.group(1)) if m else None
            lines.append(f"{source}:{line}: {msg}" if line else f"{source}: {msg}")
        raise ProtocolErrors(lines) from None
