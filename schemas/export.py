"""Export the wire contracts as JSON Schema files, one per model, for consumers in any language.

``ama-stream schemas export`` writes them to ``docs/schemas/``, where they are committed; a test
checks that the committed files match the models, so they never go stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from schemas.events import Alert, DeadLetter, ScoreEvent
from schemas.records import ImageRecord, SensorRecord
from schemas.settings import Settings

__all__ = ["EXPORTED", "export_schemas", "schema_of"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Each exported model and the side it is read from: inputs and settings are what a producer or
#: operator writes (validation), outputs are what the service writes (serialization).
EXPORTED: dict[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "SensorRecord": (SensorRecord, "validation"),
    "ImageRecord": (ImageRecord, "validation"),
    "ScoreEvent": (ScoreEvent, "serialization"),
    "Alert": (Alert, "serialization"),
    "DeadLetter": (DeadLetter, "serialization"),
    "Settings": (Settings, "validation"),
}


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema of one exported model, with its dialect declared."""
    model, mode = EXPORTED[name]
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode=mode)}


def export_schemas(out_dir: Path) -> list[Path]:
    """Write ``<Name>.json`` for every exported model into ``out_dir``; return the paths.

    Output is deterministic (sorted keys, fixed indentation) so regenerating gives no diff.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in EXPORTED:
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
