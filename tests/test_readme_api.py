"""The README's Python example, run as written (from a temporary folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "15 s planned" in out
    assert "completed 3 Li-K images" in out
    run_file = tmp_path / "runs" / "hold.h5"
    assert run_file.is_file() and (tmp_path / "runs" / "hold.bdf.csv").is_file()
    summary = namespace["summary"]
    assert isinstance(summary, dict) and summary
    json.dumps(summary)  # what summary.json holds: plain JSON


def test_a_protocol_given_as_a_dict_is_validated_like_a_file() -> None:
    import yaml

    import insitem.api as ins
    from insitem.drivers.errors import ProtocolError
    from insitem.protocols.loader import resolve

    data = yaml.safe_load(resolve("loopback-hold").read_text(encoding="utf-8"))
    assert ins.load_protocol(data).name == "loopback-hold"
    data["safety"]["current_compliance"] = "5 A"
    with pytest.raises(ProtocolError, match="current_compliance"):
        ins.load_protocol(data)
