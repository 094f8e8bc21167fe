"""The OpenAPI document as the service really answers: our error shape on every 422, and the
auth, limit and database answers every protected route can give."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from vpp_aggregator.adapters.api.schemas import ErrorOut

OPEN_PATHS = {"/health", "/health/ready", "/metrics"}
COMMON_ERRORS = {
    "503": "The database is unavailable; nothing was stored (see Retry-After)",
    "401": "No, an invalid or an expired bearer token (when authentication is on)",
    "403": "The token's role or fleet does not allow this",
    "413": "Body over VPP_MAX_BODY_BYTES",
    "429": "Over VPP_RATE_LIMIT_PER_MINUTE for this token, or for this address when the token "
    "is missing or invalid (see Retry-After)",
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the errors this service really returns: every 422 in our
    `{"detail", "errors"}` shape, and the auth and limit answers every protected route can give."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    error = {"content": {"application/json": {"schema": ref}}}
    for path, methods in doc.get("paths", {}).items():
        for op in methods.values():
            responses = op.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": responses["422"].get("description", "Invalid request"),
                    **error,
                }
            if path not in OPEN_PATHS:
                for code, text in COMMON_ERRORS.items():
                    responses.setdefault(code, {"description": text, **error})
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _hoist_defs(doc.get("paths", {}), schemas)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if "RegisterIn" not in schemas:  # the register body is one of these, or a list of them
        from vpp_aggregator.adapters.api.schemas import RegisterIn

        found = RegisterIn.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas["RegisterIn"] = found
    if "ErrorOut" not in schemas:
        schemas.update(
            ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
        )
        schemas["ErrorOut"] = ErrorOut.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    app.openapi_schema = doc
    return doc


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """A schema written by hand from a model (POST /telemetry's body) carries its nested models
    under `$defs` while its refs point at components: move them there, or ReDoc refuses the
    whole document over the dangling reference."""
    if isinstance(node, dict):
        schemas.update(node.pop("$defs", {}))
        for value in node.values():
            _hoist_defs(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_defs(value, schemas)
