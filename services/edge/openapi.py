"""The OpenAPI 3.1 document, generated from the same bindings the router serves.

Schemas follow the proto3 JSON mapping the edge speaks: lowerCamelCase property names, 64-bit
integers as decimal strings, enums by name, well-known types in their JSON forms.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.rpc import status_pb2

from services.edge.rules import Binding
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as bpb
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb

F = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    F.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_ANY_JSON = {"description": "any JSON value", "type": ["object", "array", "string", "number", "boolean", "null"]}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated lowerCamelCase field paths"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": _ANY_JSON,
    "google.protobuf.ListValue": {"type": "array", "items": _ANY_JSON},
    "google.protobuf.Empty": {"type": "object", "properties": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "type.googleapis.com/<message full name>"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}
# Query parameters flatten nested request messages down to this depth.
_MAX_QUERY_DEPTH = 4
STATUS = status_pb2.Status.DESCRIPTOR.full_name


class _Schemas:
    def __init__(self):
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {}  # placeholder: recursive messages refer to it
            properties = {f.json_name: self.field(f) for f in descriptor.fields}
            schema: dict[str, Any] = {"type": "object", "title": descriptor.name, "properties": properties}
            oneofs = [o for o in descriptor.oneofs if not (len(o.fields) == 1 and o.fields[0].has_presence)]
            if oneofs:
                schema["description"] = "; ".join(
                    "at most one of " + ", ".join(f.json_name for f in o.fields) for o in oneofs
                )
            self.components[descriptor.full_name] = schema
        return self.ref(descriptor.full_name)

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {
                "type": "string",
                "title": descriptor.name,
                "enum": [v.name for v in descriptor.values],
            }
        return self.ref(descriptor.full_name)

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == F.TYPE_MESSAGE:
            return self.message(field.message_type)
        if field.type == F.TYPE_ENUM:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if field.is_repeated:
            return {"type": "array", "items": self.single(field)}
        return self.single(field)


def document(bindings: list[Binding], title: str = "Fanbank", version: str = "v1") -> dict[str, Any]:
    schemas = _Schemas()
    status = schemas.message(status_pb2.Status.DESCRIPTOR)
    error = {
        "description": "an error: a google.rpc.Status whose details carry a google.rpc.ErrorInfo (reason, domain)",
        "content": {"application/json": {"schema": status}},
    }
    unauthorized = {
        "description": "missing, expired or invalid bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": status}},
    }
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: dict[str, int] = {}
    for binding in bindings:
        base = f"{binding.method.containing_service.name}_{binding.method.name}"
        operation_ids[base] = operation_ids.get(base, 0) + 1
        operation_id = base if operation_ids[base] == 1 else f"{base}_{operation_ids[base]}"
        operation = _operation(binding, schemas, operation_id)
        operation["responses"].update({"401": unauthorized, "default": error})
        paths.setdefault(binding.template.openapi_path, {})[binding.http_method.lower()] = operation
    paths.update(_public_paths())
    paths.update(_fixed_paths(schemas, unauthorized, error))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Generated from the google.api.http annotations of the Fanbank protos. "
            "Bodies use the proto3 JSON mapping; server-streaming RPCs are Server-Sent Events.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearerAuth": []}],
    }


def _operation(binding: Binding, schemas: _Schemas, operation_id: str) -> dict[str, Any]:
    method = binding.method
    parameters = []
    for variable in binding.template.variables:
        schema = schemas.single(variable.fields[-1])
        if variable.segments != "*":
            pattern = "/".join("[^/]+" if s == "*" else ".+" if s == "**" else s for s in variable.segments.split("/"))
            schema = {"type": "string", "pattern": f"^{pattern}$"}
        parameters.append({"name": variable.name, "in": "path", "required": True, "schema": schema})
    if binding.body != "*":
        bound = {v.name for v in binding.template.variables}
        skip = binding.body_field.name if binding.body_field else None
        parameters += _query_parameters(method.input_type, schemas, bound, skip, "", 0, ())
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": method.name,
        "description": f"gRPC {binding.grpc_path}",
        "tags": [method.containing_service.name],
        "parameters": parameters,
    }
    if binding.body:
        body_schema = schemas.message(method.input_type) if binding.body == "*" else schemas.field(binding.body_field)
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if binding.response_body_field is not None:
        reply = schemas.field(binding.response_body_field)
    else:
        reply = schemas.message(method.output_type)
    if binding.streaming:
        content = {
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": "Server-Sent Events: each event's data is one JSON object of x-event-data; "
                    "': keep-alive' comments keep the connection open",
                },
                "x-event-data": reply,
            }
        }
    else:
        content = {"application/json": {"schema": reply}}
    operation["responses"] = {"200": {"description": "OK", "content": content}}
    return operation


def _query_parameters(
    message: Descriptor, schemas: _Schemas, bound: set[str], skip: str | None, prefix: str, depth: int, chain: tuple
) -> list[dict[str, Any]]:
    parameters = []
    for field in message.fields:
        name = prefix + field.name
        if name in bound or (depth == 0 and field.name == skip):
            continue
        repeated = field.is_repeated
        is_message = field.type == F.TYPE_MESSAGE
        if is_message and field.message_type.GetOptions().map_entry:
            continue
        if is_message and field.message_type.full_name not in _WELL_KNOWN:
            nested = field.message_type
            if not repeated and depth < _MAX_QUERY_DEPTH and nested.full_name not in chain:
                parameters += _query_parameters(
                    nested, schemas, bound, skip, name + ".", depth + 1, (*chain, message.full_name)
                )
            continue
        parameter = {"name": name, "in": "query", "required": False, "schema": schemas.field(field)}
        if repeated:
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _fixed_paths(schemas: _Schemas, unauthorized: dict, error: dict) -> dict[str, Any]:
    """The routes written by hand (webhooks.py, overlay.py): no bearer token, their own credentials."""
    token = {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "the creator's secret overlay token (RotateOverlayToken)",
        "schema": {"type": "string"},
    }
    events = {
        "type": "string",
        "description": "Server-Sent Events: each id is a resume token (Last-Event-ID resumes); each data is "
        "one JSON object of x-event-data",
    }
    return {
        "/webhooks/livekit": {
            "post": {
                "operationId": "livekit_webhook",
                "summary": "LiveKit webhook, passed to Billing with its Authorization header",
                "security": [],
                "parameters": [
                    {"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/webhook+json": {
                            "schema": {"type": "object", "description": "LiveKit's WebhookEvent, signed byte for byte"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "verified and handled",
                        "content": {
                            "application/json": {"schema": schemas.message(bpb.ReceiveMediaWebhookResponse.DESCRIPTOR)}
                        },
                    },
                    "401": unauthorized,
                    "default": error,
                },
            }
        },
        "/overlay/{token}": {
            "get": {
                "operationId": "overlay_page",
                "summary": "the creator's OBS alert page",
                "security": [],
                "parameters": [token],
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "default": error,
                },
            }
        },
        "/overlay/{token}/events": {
            "get": {
                "operationId": "overlay_events",
                "summary": "the creator's alerts as Server-Sent Events, for the overlay page",
                "security": [],
                "parameters": [token],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "text/event-stream": {
                                "schema": events,
                                "x-event-data": schemas.message(gpb.WatchCreatorAlertsResponse.DESCRIPTOR),
                            }
                        },
                    },
                    "default": error,
                },
            }
        },
    }


def _public_paths() -> dict[str, Any]:
    health = {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]},
            "backends": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["status"],
    }

    def probe(summary: str, codes: dict[str, str]) -> dict[str, Any]:
        responses = {
            code: {"description": text, "content": {"application/json": {"schema": health}}}
            for code, text in codes.items()
        }
        return {"get": {"operationId": summary, "summary": summary, "security": [], "responses": responses}}

    return {
        "/healthz": probe("healthz", {"200": "the edge is alive"}),
        "/readyz": probe("readyz", {"200": "every backend is serving", "503": "a backend is not serving"}),
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
