"""The protocol format reference, generated from the schema so that it cannot drift.

`python -m insitem.protocols.reference` writes two files from protocols/schema.py:

* `protocols/protocol.schema.json`, a JSON Schema for editors (shipped in the package), and
* `docs/protocol-format.md`, the page users read: every key of every section with its type,
  unit, default and allowed range, an example per step kind and per exposure trigger.

A test regenerates both and compares them with the committed files. `--check` does the same
from the command line (exit 1 when a file is out of date).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from insitem.protocols.schema import STEP_KINDS, TRIGGER_EXAMPLES, UNKNOWN_STEP_MODEL, Protocol

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR / "protocol.schema.json"
DOCS_PATH = PACKAGE_DIR.parent / "docs" / "protocol-format.md"  # in the source tree

#: sections of the page before the steps, in reading order: (YAML key path, schema definition name)
SECTIONS = [
    ("(top level)", "Protocol"),
    ("sample", "Sample"),
    ("instruments", "Instruments"),
    ("instruments.potentiostat / .camera / .microscope", "InstrumentEntry"),
    ("safety", "Safety"),
    ("beam", "Beam"),
    ("spectrometer", "Spectrometer"),
    ("spectrometer.camera", "Camera"),
    ("spectrometer.slit", "Slit"),
    ("spectrometer.windows[]", "Window"),
    ("drift", "DriftCorrection"),
]


def _sections() -> list[tuple[str, str]]:
    """Every section, the step kinds from the registry included."""
    kinds = [(f"steps[].{kind}", model.__name__) for kind, model in STEP_KINDS.items()]
    return [*SECTIONS, ("steps[]", "Steps"), *kinds, ("steps[].<kind>.exposures[]", "Exposures")]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a protocol file, with quantity defaults written as text with units."""
    schema = Protocol.model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://insitem.invalid/protocol.schema.json",
        **schema,
        "title": "insitem protocol",
    }
    defs = schema["$defs"]
    # the stand-in for an unknown step kind only produces error messages: editors need not see it
    unknown = f"#/$defs/{UNKNOWN_STEP_MODEL.__name__}"
    items = schema["properties"]["steps"]["items"]
    items["oneOf"] = [ref for ref in items["oneOf"] if ref.get("$ref") != unknown]
    defs.pop(UNKNOWN_STEP_MODEL.__name__, None)
    for model in STEP_KINDS.values():
        d = defs[model.__name__]
        d["examples"] = [yaml.safe_load(model.example)[model.kind]]
        if "exposures" in d["properties"]:  # the common key last, after the kind's own
            d["properties"]["exposures"] = d["properties"].pop("exposures")
    defs["Exposures"]["examples"] = [yaml.safe_load(text) for text in TRIGGER_EXAMPLES.values()]
    for definition in [schema, *defs.values()]:
        for prop in definition.get("properties", {}).values():
            unit = prop.get("x-si-unit")
            if unit and isinstance(prop.get("default"), (int, float)):
                prop["default"] = f"{prop['default']:.10g} {unit}"
            prop.pop("title", None)
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------------------------
# The page


def _type(node: dict[str, Any]) -> str:
    """A JSON Schema node as a short phrase: 'time (e.g. '30 s')', 'list of ...', 'one of ...'."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"mapping ([{name}](#{_anchor(name)}))"
    if "oneOf" in node:  # the steps union
        return "mapping with one key, the step kind ([Steps](#steps))"
    if "anyOf" in node:
        parts = [p for p in node["anyOf"] if p.get("type") != "null"]
        return " or ".join(_type(p) for p in parts)
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    kind = node.get("type")
    if kind == "string" and "x-kind" in node:
        return f"{node['x-kind']} with unit, e.g. `{node['examples'][0]}`"
    if kind == "string":
        extra = [f"at most {node['maxLength']} characters"] if "maxLength" in node else []
        if "pattern" in node:
            extra.append(f"matching `{node['pattern']}`")
        return "text" + (f" ({', '.join(extra)})" if extra else "")
    if kind == "integer":
        return f"whole number {node.get('minimum', '')}..{node.get('maximum', '')}"
    if kind == "number":
        return f"number {node.get('minimum', '')}..{node.get('maximum', '')}"
    if kind == "boolean":
        return "`true` or `false`"
    if kind == "array" and "prefixItems" in node:
        return "[" + ", ".join(_type(p) for p in node["prefixItems"]) + "]"
    if kind == "array":
        size = []
        if node.get("minItems"):
            size.append(f"at least {node['minItems']}")
        if "maxItems" in node:
            size.append(f"at most {node['maxItems']}")
        return f"list of {_type(node.get('items', {}))}" + (f" ({', '.join(size)})" if size else "")
    return kind or "any"


def _range(node: dict[str, Any]) -> str:
    for part in [node, *node.get("anyOf", [])]:
        if "x-range" in part:
            return str(part["x-range"])
    return ""


def _anchor(name: str) -> str:
    return name.lower()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    schema = json_schema()
    defs = {**schema["$defs"], "Protocol": schema}
    out = [
        "# Protocol file format",
        "",
        "<!-- Generated by `python -m insitem.protocols.reference` from protocols/schema.py: do not edit by hand. -->",
        "",
        "A protocol is a YAML file (`insitem validate FILE` checks it, `insitem plan FILE` shows its timeline).",
        "The JSON Schema `protocols/protocol.schema.json` (installed as `insitem/protocols/protocol.schema.json`)",
        "describes the same format for editors; both are generated from `protocols/schema.py`.",
        "",
        "Rules that hold everywhere:",
        "",
        "* Quantities are text with a unit (`1.5 V`, `40 mV/min`, `30 s`, `1880 nm`, `10 e/Å^2/s`); a bare",
        "  number where a quantity belongs is an error. `e` in a dose counts electrons; `A` is the ampere",
        "  (write `Å` or `angstrom`). A quantity is at most 64 characters.",
        "* Every number has physical bounds (the *allowed* column, in SI or the unit shown); the source",
        "  voltage and current limit must also lie within the declared potentiostat's range",
        "  (Keithley 2400 and 2450: +-210 V; current limit 1 nA-1.05 A, at most 105 mA beyond +-21 V).",
        "* Counts are whole numbers: `true`, `false`, `2.0` and `'2'` are refused where a count belongs.",
        "* Unknown keys, duplicate keys and merge keys (`<<`) are errors: a later key can never",
        "  silently replace a limit. Validation reports every error, one line each, with file and line.",
        "* A protocol or step lasts at most 30 days; the plan refuses a run beyond the dose budget",
        "  (`safety.max_total_dose`) or with exposures that overlap.",
        "",
    ]
    for where, name in _sections():
        if name == "Steps":
            out += ["## Steps", "", "Key: `steps[]`. Each entry of `steps` is a mapping with exactly one key, the step kind:", ""]
            for model in STEP_KINDS.values():
                out += [f"* `{model.kind}`: {(model.__doc__ or '').strip().splitlines()[0]} ([{model.__name__}](#{_anchor(model.__name__)}))"]
            out.append("")
            continue
        d = defs[name]
        out += [f"## {name}", "", f"Key: `{where}`." + (f" {d['description']}" if d.get("description") else ""), ""]
        required = set(d.get("required", []))
        out += ["| key | value | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key, prop in d.get("properties", {}).items():
            default = "required" if key in required else f"`{json.dumps(prop.get('default'), ensure_ascii=False)}`" if "default" in prop else ""
            out.append(
                f"| `{key}` | {_cell(_type(prop))} | {_cell(default)} | {_cell(_range(prop))} | {_cell(prop.get('description', ''))} |"
            )
        out.append("")
        if name in {m.__name__ for m in STEP_KINDS.values()}:
            model = next(m for m in STEP_KINDS.values() if m.__name__ == name)
            out += ["Example:", "", "```yaml", "steps:", *("  - " + line if i == 0 else "    " + line
                                                             for i, line in enumerate(model.example.split("\n"))), "```", ""]
        if name == "Exposures":
            out += [
                "Each entry takes exactly one trigger; the windows listed are exposed back to back, each",
                "followed by the camera's dead time. Every step kind takes `every`, `at_start` and `at_end`;",
                "the others are for the kinds that list them ("
                + "; ".join(f"{m.kind}: {', '.join(m.triggers)}" for m in STEP_KINDS.values()) + "). Triggers, one example each:",
                "",
            ]
            for trigger, text in TRIGGER_EXAMPLES.items():
                out += [f"`{trigger}`:", "", "```yaml", "exposures:",
                        *("  - " + line if i == 0 else "    " + line for i, line in enumerate(text.split("\n"))), "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insitem.protocols.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=Path, default=SCHEMA_PATH, help=f"JSON Schema file (default {SCHEMA_PATH})")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help=f"Markdown page (default {DOCS_PATH})")
    parser.add_argument("--check", action="store_true", help="only check that both files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((args.schema, schema_text()), (args.docs, markdown())):
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python -m insitem.protocols.reference)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
