"""The protocol format reference (docs/protocol-format.md) and the JSON Schema for editors
(protocols/protocol.schema.json) are generated from the schema: the committed files must be what
the generator writes today, the JSON Schema must accept the shipped protocols and refuse what the
loader refuses for its structure, and every example on the page must validate and plan."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from insitem.protocols import reference
from insitem.protocols.loader import library_dir, loads
from insitem.protocols.plan import make_plan
from insitem.protocols.schema import STEP_KINDS, TRIGGER_EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
FULL = yaml.safe_load((Path(__file__).parent / "full.yaml").read_text(encoding="utf-8"))


def test_committed_reference_files_are_up_to_date() -> None:
    assert (ROOT / "protocols" / "protocol.schema.json").read_text(encoding="utf-8") == reference.schema_text(), (
        "run python -m insitem.protocols.reference")
    assert (ROOT / "docs" / "protocol-format.md").read_text(encoding="utf-8") == reference.markdown(), (
        "run python -m insitem.protocols.reference")


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    schema, docs = tmp_path / "s.json", tmp_path / "f.md"
    assert reference.main(["--schema", str(schema), "--docs", str(docs)]) == 0
    assert reference.main(["--schema", str(schema), "--docs", str(docs), "--check"]) == 0
    docs.write_text("old\n", encoding="utf-8")
    assert reference.main(["--schema", str(schema), "--docs", str(docs), "--check"]) == 1


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "protocols" / "protocol.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", sorted(library_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_the_json_schema_accepts_the_shipped_protocols(path: Path, validator: jsonschema.Draft202012Validator) -> None:
    validator.validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(("where", "key", "value"), [
    (("safety",), "current_compliance_max", "1 A"),  # unknown key
    (("steps", 0, "cv"), "cycles", True),  # bool for a count
    (("steps", 0, "cv"), "cycles", 0),  # below the minimum
    (("spectrometer", "slit"), "length", 1880e-9),  # bare number for a quantity
    (("spectrometer", "windows", 0), "edges", ["C-K"]),  # unknown edge
])
def test_the_json_schema_refuses_what_the_loader_refuses(where: tuple, key: str, value: object,
                                                        validator: jsonschema.Draft202012Validator) -> None:
    tree = copy.deepcopy(FULL)
    node = tree
    for k in where:
        node = node[k]
    node[key] = value
    assert not validator.is_valid(tree)
    with pytest.raises(Exception):
        loads(yaml.safe_dump(tree, allow_unicode=True))


def _with_step(step: dict) -> str:
    tree = copy.deepcopy(FULL)
    tree["steps"] = [step]
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


@pytest.mark.parametrize("model", list(STEP_KINDS.values()), ids=lambda m: m.kind)
def test_every_step_example_plans(model: type) -> None:
    plan = make_plan(loads(_with_step(yaml.safe_load(model.example))))
    assert plan.steps[0].kind == model.kind and plan.images
    assert {"steps": [yaml.safe_load(model.example)]} in _yaml_blocks(reference.markdown())


def _yaml_blocks(page: str) -> list[object]:
    return [yaml.safe_load(block.split("\n", 1)[1]) for block in page.split("```")[1::2] if block.startswith("yaml\n")]


@pytest.mark.parametrize("trigger", list(TRIGGER_EXAMPLES))
def test_every_trigger_example_plans(trigger: str) -> None:
    cv = yaml.safe_load(STEP_KINDS["cv"].example)["cv"]
    cv["exposures"] = [yaml.safe_load(TRIGGER_EXAMPLES[trigger])]
    plan = make_plan(loads(_with_step({"cv": cv})))
    assert plan.images and {e.trigger for e in plan.images if not e.tracking} == {trigger}
    assert {"exposures": [yaml.safe_load(TRIGGER_EXAMPLES[trigger])]} in _yaml_blocks(reference.markdown())
