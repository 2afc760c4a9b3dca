"""JSON Schema export: every model gets a valid, current file."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.export import EXPORTED, JSON_SCHEMA_DIALECT, export_schemas, schema_of

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_export_writes_one_schema_per_model(tmp_path: Path) -> None:
    paths = export_schemas(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{name}.json" for name in EXPORTED)
    assert set(EXPORTED) == {
        "SensorRecord",
        "ImageRecord",
        "ScoreEvent",
        "Alert",
        "DeadLetter",
        "Settings",
    }
    for path in paths:
        schema = json.loads(path.read_text())
        assert schema["$schema"] == JSON_SCHEMA_DIALECT
        assert schema["type"] == "object" and schema["title"] == path.stem
        assert schema["properties"] and isinstance(schema.get("required", []), list)
        # every $ref points at a definition that exists
        for ref in _refs(schema):
            assert ref.startswith("#/$defs/") and ref.split("/")[-1] in schema["$defs"]


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in export_schemas(tmp_path / "a")]
    second = [p.read_bytes() for p in export_schemas(tmp_path / "b")]
    assert first == second


def test_committed_schemas_are_current() -> None:
    """docs/schemas must be regenerated (`ama-stream schemas export`) when a model changes."""
    for name in EXPORTED:
        committed = json.loads((COMMITTED / f"{name}.json").read_text())
        assert committed == schema_of(name), f"docs/schemas/{name}.json is stale"


def test_schemas_describe_the_wire_not_python() -> None:
    sensor = schema_of("SensorRecord")["properties"]
    assert {"type": "string"} in [
        {"type": s["type"]} for s in sensor["ts"]["anyOf"]
    ]  # ISO-8601 accepted on input
    score = schema_of("ScoreEvent")["properties"]
    assert score["ts"]["type"] == "number"
    settings = schema_of("Settings")["$defs"]["KafkaSettings"]["properties"]
    assert settings["sasl_password"]["anyOf"][0]["format"] == "password"


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_cli_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streamer.cli import app

    result = CliRunner().invoke(app, ["schemas", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(EXPORTED)
