"""`asyncapi.yaml` tells the other layers what we read and what we send; `app/messages.py` is
what we read and `app/outbound.py` what we send. This holds them together for every message:
the same fields, the same JSON types and values, down through nested objects and lists; a
message we read requires what the document requires, one we send always carries it and sends
null only where the document allows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from vpp_aggregator.adapters.openadr import WireEvent
from vpp_aggregator.app import messages, outbound

DOC = yaml.safe_load((Path(__file__).parents[1] / "asyncapi.yaml").read_text())
INBOUND = {  # asyncapi message name -> the type the consumer reads it into
    "TelemetrySample": messages.TelemetrySample,
    "TelemetryBatch": messages.SampleBatchMessage,
    "GridSignal": WireEvent,
    "ChargingEvent": messages.ChargerPlugEvent,
    "PhysicsAlert": messages.PhysicsAlert,
    "Award": messages.MarketAward,
    "CommandAck": messages.CommandAck,
    "RegulationSignal": messages.RegulationSignal,
}
OUTBOUND = {  # asyncapi message name -> the type the service builds it as
    "V2GCommand": outbound.V2GCommand,
    "Offer": outbound.Offer,
    "Settlement": outbound.Settlement,
    "DeadLetter": outbound.DeadLetter,
    "AggregateTelemetry": outbound.AggregateTelemetryMessage,
    "RegulationCommand": outbound.RegulationCommandMessage,
    "RegulationBroadcast": outbound.RegulationBroadcast,
}
# Fields the document names because the other layer sends them, which we read nothing from.
UNREAD = {
    "GridSignal": {"programID", "eventName"},
    "PhysicsAlert": {"severity", "physics_score", "confidence_score"},
}


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _types(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """The JSON types a schema allows, null aside (an absent optional field reads as null)."""
    node = _resolve(node, root)
    found: set[str] = set()
    for option in node.get("anyOf", []):
        found |= _types(option, root)
    kind = node.get("type")
    found |= set(kind) if isinstance(kind, list) else {kind} if kind else set()
    return found - {"null"}


def _object(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    node = _resolve(node, root)
    if "properties" in node:
        return node
    for option in node.get("anyOf", []):
        found = _object(option, root)
        if found is not None:
            return found
    return None


def _items(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    node = _resolve(node, root)
    for option in [node, *node.get("anyOf", [])]:
        if "items" in option:
            items: dict[str, Any] = option["items"]
            return items
    return None


def _nullable(node: dict[str, Any], root: dict[str, Any]) -> bool:
    node = _resolve(node, root)
    kind = node.get("type")
    return (
        kind == "null"
        or (isinstance(kind, list) and "null" in kind)
        or any(_nullable(o, root) for o in node.get("anyOf", []))
    )


def _values(node: dict[str, Any]) -> set[Any] | None:
    if "enum" in node:
        return set(node["enum"])
    return {node["const"]} if "const" in node else None


def _differences(
    doc: dict[str, Any],
    ours: dict[str, Any],
    ours_root: dict[str, Any],
    where: str,
    unread: set[str],
    sent: bool = False,
) -> list[str]:
    out = []
    verb = "sent" if sent else "read"
    doc, ours = _resolve(doc, DOC), _resolve(ours, ours_root)
    doc_types, our_types = _types(doc, DOC), _types(ours, ours_root)
    if doc_types and our_types and doc_types != our_types:
        out.append(f"{where}: documented {sorted(doc_types)}, {verb} as {sorted(our_types)}")
    doc_values, our_values = _values(doc), _values(ours)
    if doc_values is not None and our_values is not None and doc_values != our_values:
        out.append(f"{where}: documented values {sorted(doc_values)}, {verb} {sorted(our_values)}")
    if sent and _nullable(ours, ours_root) and not _nullable(doc, DOC):
        out.append(f"{where}: sent as null, documented as never null")
    doc_obj, our_obj = _object(doc, DOC), _object(ours, ours_root)
    if doc_obj is not None and our_obj is not None:
        documented, read = set(doc_obj["properties"]), set(our_obj["properties"])
        for name in sorted(documented - read - unread):
            out.append(f"{where}.{name}: documented, not {verb}")
        for name in sorted(read - documented):
            out.append(f"{where}.{name}: {verb}, not documented")
        doc_required = set(doc_obj.get("required", []))
        our_required = set(our_obj.get("required", []))
        if sent and not doc_required <= our_required:  # we may always send more than promised
            out.append(
                f"{where}: documented required {sorted(doc_required - our_required)}, not always sent"
            )
        if not sent and doc_required != our_required:
            out.append(
                f"{where}: documented required {sorted(doc_required)}, "
                f"read as required {sorted(our_required)}"
            )
        for name in sorted(documented & read):
            out += _differences(
                doc_obj["properties"][name],
                our_obj["properties"][name],
                ours_root,
                f"{where}.{name}",
                set(),
                sent,
            )
    doc_items, our_items = _items(doc, DOC), _items(ours, ours_root)
    if doc_items is not None and our_items is not None:
        out += _differences(doc_items, our_items, ours_root, f"{where}[]", set(), sent)
    return out


@pytest.mark.parametrize("name", sorted(INBOUND))
def test_the_document_and_the_types_agree(name: str) -> None:
    schema = TypeAdapter(INBOUND[name]).json_schema()
    payload = DOC["components"]["messages"][name]["payload"]
    assert _differences(payload, schema, schema, name, UNREAD.get(name, set())) == []


@pytest.mark.parametrize("name", sorted(OUTBOUND))
def test_what_we_send_keeps_to_the_document(name: str) -> None:
    schema = TypeAdapter(OUTBOUND[name]).json_schema()
    payload = DOC["components"]["messages"][name]["payload"]
    assert _differences(payload, schema, schema, name, set(), sent=True) == []


def test_every_outbound_message_of_the_document_has_a_type() -> None:
    sent = {
        message["$ref"].split("/")[-1]
        for operation in DOC["operations"].values()
        if operation["action"] == "send"
        for message in _resolve(operation["channel"], DOC)["messages"].values()
    }
    assert sent == set(OUTBOUND)


def test_a_null_we_may_send_where_the_document_has_none_is_found() -> None:
    class Loose(outbound.DeadLetter):  # as if `reason` could be missing and sent as null
        pass

    schema = TypeAdapter(outbound.DeadLetter).json_schema()
    schema["properties"]["reason"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    doc = DOC["components"]["messages"]["DeadLetter"]["payload"]
    assert _differences(doc, schema, schema, "DeadLetter", set(), sent=True) == [
        "DeadLetter.reason: sent as null, documented as never null"
    ]


def test_every_inbound_message_of_the_document_has_a_type() -> None:
    received = {
        message["$ref"].split("/")[-1]
        for operation in DOC["operations"].values()
        if operation["action"] == "receive"
        for message in _resolve(operation["channel"], DOC)["messages"].values()
    }
    assert received == set(INBOUND)


def test_a_difference_is_found() -> None:
    """The comparison is not blind: a field renamed in the document is caught."""
    doc = _resolve(DOC["components"]["messages"]["Award"]["payload"], DOC)
    renamed = {**doc, "properties": {**doc["properties"], "awarded_mw": {"type": "number"}}}
    schema = TypeAdapter(messages.MarketAward).json_schema()
    assert _differences(renamed, schema, schema, "Award", set()) == [
        "Award.awarded_mw: documented, not read"
    ]
