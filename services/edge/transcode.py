"""HTTP request → protobuf request, protobuf response → JSON, for one binding.

Proto3 JSON through `json_format` in both directions; unknown fields, in the body or the query, are
refused rather than ignored, so a misspelt field never silently becomes a default. Path variables
fill their fields after the body; a body that sets the same field to something else is refused.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.edge.errors import EdgeError
from services.edge.rules import RESUME_TOKEN_FIELD, Binding, resolve

# Messages that proto3 JSON writes as one string, so a query parameter can carry them.
_STRING_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.BoolValue",
    }
)
MAX_QUERY_PARAMETERS = 64
MAX_JSON_DEPTH = 32
# Resume tokens are short (a channel and a sequence per channel); anything longer is not one.
MAX_LAST_EVENT_ID_CHARS = 1024


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _invalid(reason: str, message: str, **metadata: str) -> EdgeError:
    return EdgeError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, **metadata)


def build_request(
    binding: Binding, path_values: dict[str, str], query: list[tuple[str, str]], body: bytes | None
) -> Message:
    request = message_class(binding.method.input_type)()
    if binding.body:
        data = _json(body) if body else {}
        if binding.body == "*":
            if not isinstance(data, dict):
                raise _invalid("INVALID_JSON", "the request body must be a JSON object")
            _parse(data, request)
        else:
            _parse({binding.body_field.name: data}, request)
    params: dict[str, Any] = {}
    for variable in binding.template.variables:
        _put(params, variable.fields, _decode(path_values[variable.group], variable.multi_segment))
    _query(binding, request.DESCRIPTOR, query, params)
    from_params = message_class(binding.method.input_type)()
    _parse(params, from_params)
    for variable in binding.template.variables:
        in_body = _get(request, variable.fields)
        if in_body not in (None, variable.fields[-1].default_value, _get(from_params, variable.fields)):
            raise _invalid(
                "PATH_BODY_MISMATCH", f"{variable.name} in the body differs from the path", field=variable.name
            )
    request.MergeFrom(from_params)
    return request


def resume_from(binding: Binding, request: Message, last_event_id: str | None) -> None:
    """A reconnecting EventSource sends the id of the last event it saw as Last-Event-ID; on a
    resumable feed that id is the resume token. On other streams (ids numbered per connection) it
    means nothing."""
    if binding.resumable:
        resume_token_from(request, last_event_id)


def resume_token_from(request: Message, last_event_id: str | None) -> None:
    """Last-Event-ID becomes the request's resume token, unless the query already chose one."""
    if not last_event_id or getattr(request, RESUME_TOKEN_FIELD):
        return
    if len(last_event_id) > MAX_LAST_EVENT_ID_CHARS:
        raise _invalid("INVALID_FIELD_VALUE", "Last-Event-ID is too long to be a resume token", field="Last-Event-ID")
    setattr(request, RESUME_TOKEN_FIELD, last_event_id)


def render(binding: Binding, response: Message) -> Any:
    data = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
    if binding.response_body_field is not None:
        return data.get(binding.response_body_field.json_name)
    return data


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        raise _invalid("INVALID_JSON", f"the request body is not JSON: {error}") from None


def _parse(data: Any, message: Message) -> None:
    try:
        json_format.ParseDict(data, message, max_recursion_depth=MAX_JSON_DEPTH)
    except json_format.ParseError as error:
        text = str(error).split("\n")[0]
        reason = "UNKNOWN_FIELD" if "has no field named" in text else "INVALID_FIELD_VALUE"
        raise _invalid(reason, text) from None


def _decode(value: str, multi_segment: bool) -> str:
    """Single-segment variables decode every %XX; multi-segment ones keep %2F so that a '/' the
    client escaped stays distinguishable from a separator (google/api/http.proto)."""
    if multi_segment:
        value = value.replace("%2F", "%252F").replace("%2f", "%252f")
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise _invalid("INVALID_FIELD_VALUE", "a path segment is not UTF-8") from None


def _query(binding: Binding, request: Descriptor, query: list[tuple[str, str]], params: dict[str, Any]) -> None:
    if len(query) > MAX_QUERY_PARAMETERS:
        raise _invalid("INVALID_FIELD_VALUE", f"at most {MAX_QUERY_PARAMETERS} query parameters")
    bound = {v.name for v in binding.template.variables}
    seen: set[str] = set()
    for key, value in query:
        if binding.body == "*":
            raise _invalid("UNKNOWN_FIELD", f"this route reads its input from the body, not {key!r}", field=key)
        try:
            fields = resolve(request, key, json_names=True)
        except KeyError:
            raise _invalid("UNKNOWN_FIELD", f"{request.full_name} has no field {key!r}", field=key) from None
        name = ".".join(f.name for f in fields)
        leaf = fields[-1]
        if name in bound or fields[0] is binding.body_field:
            raise _invalid("UNKNOWN_FIELD", f"{name} is given by the path or the body, not the query", field=key)
        if leaf.type == FieldDescriptor.TYPE_MESSAGE and leaf.message_type.full_name not in _STRING_MESSAGES:
            raise _invalid("UNKNOWN_FIELD", f"{name} cannot be given as a query parameter", field=key)
        repeated = leaf.is_repeated
        if name in seen and not repeated:
            raise _invalid("INVALID_FIELD_VALUE", f"{name} is given twice", field=key)
        seen.add(name)
        if leaf.type == FieldDescriptor.TYPE_BOOL:
            value = {"true": True, "false": False}.get(value, value)
        _put(params, fields, value, repeated)


def _put(params: dict[str, Any], fields, value: Any, repeated: bool = False) -> None:
    node = params
    for field in fields[:-1]:
        node = node.setdefault(field.name, {})
    if repeated:
        node.setdefault(fields[-1].name, []).append(value)
    else:
        node[fields[-1].name] = value


def _get(message: Message, fields) -> Any:
    for field in fields[:-1]:
        if not message.HasField(field.name):
            return None
        message = getattr(message, field.name)
    return getattr(message, fields[-1].name)
