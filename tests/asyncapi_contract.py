"""What we send, held to what `asyncapi.yaml` promises the other layers: each payload validates
against its message's JSON schema, and names no field the document does not (a field nobody was
told about is a contract change too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

DOC: dict[str, Any] = yaml.safe_load((Path(__file__).parents[1] / "asyncapi.yaml").read_text())


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _undocumented(value: Any, schema: Any, where: str) -> list[str]:
    schema = _resolve(schema)
    if isinstance(value, dict) and isinstance(schema, dict) and "properties" in schema:
        out = [f"{where}.{k}" for k in value if k not in schema["properties"]]
        for k, v in value.items():
            if k in schema["properties"]:
                out += _undocumented(v, schema["properties"][k], f"{where}.{k}")
        return out
    if isinstance(value, list) and isinstance(schema, dict) and "items" in schema:
        return [
            m
            for i, v in enumerate(value)
            for m in _undocumented(v, schema["items"], f"{where}[{i}]")
        ]
    return []


def problems(message: str, payload: dict[str, Any]) -> list[str]:
    """Why `payload` breaks the document's `message` (empty: it keeps to it)."""
    schema = {"$ref": f"#/components/messages/{message}/payload", "components": DOC["components"]}
    found = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(payload)]
    return found + [f"{p} is not in asyncapi.yaml" for p in _undocumented(payload, schema, message)]
