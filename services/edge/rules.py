"""HTTP bindings read from the `google.api.http` options of compiled descriptors.

Each annotated RPC gives one binding per rule (the rule and its `additional_bindings`): the HTTP
method, the path template compiled to a regular expression, the request fields its variables fill,
and where the body and the response body go. Everything is checked once at start-up, so a proto
whose annotation names a missing field stops the edge instead of failing a request later.

Template grammar (google/api/http.proto):
    Template = "/" Segments [ Verb ] ;  Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;  Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor

GEN = Path(__file__).resolve().parents[2] / "shared" / "gen"
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+")
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# fanbank.<service>.v<N>: the package names the deployable that serves it.
_PACKAGE = re.compile(r"fanbank\.([a-z]+)\.v[0-9]+")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The field through which resumable feeds (shared/watch.py tokens) hand out and take back positions.
RESUME_TOKEN_FIELD = "resume_token"


class RuleError(ValueError):
    """An annotation the edge cannot serve; raised at start-up."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str  # the field path as written in the template, e.g. "name" or "account.owner_id"
    fields: tuple[FieldDescriptor, ...]
    group: str  # its named group in Template.regex
    segments: str  # what it matches, e.g. "*" or "owners/*/things/*"

    @property
    def multi_segment(self) -> bool:
        return "/" in self.segments or "**" in self.segments


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    regex: re.Pattern[str]
    variables: tuple[Variable, ...]
    verb: str
    literal_segments: int
    openapi_path: str


@dataclass(frozen=True, slots=True)
class Binding:
    http_method: str
    template: Template
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    body_field: FieldDescriptor | None
    response_body_field: FieldDescriptor | None
    method: MethodDescriptor

    @property
    def service_name(self) -> str:
        return self.method.containing_service.full_name

    @property
    def grpc_path(self) -> str:
        return f"/{self.service_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def key(self) -> tuple[str, str]:
        return self.http_method, self.template.text

    @property
    def resumable(self) -> bool:
        """A server stream whose messages carry `resume_token` and whose request takes one back:
        its SSE ids are those tokens, and Last-Event-ID resumes it."""
        return self.streaming and is_resumable(self.method)


def is_resumable(method: MethodDescriptor) -> bool:
    def token_field(message: Descriptor) -> bool:
        field = message.fields_by_name.get(RESUME_TOKEN_FIELD)
        return field is not None and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated

    return token_field(method.input_type) and token_field(method.output_type)


def discover_files() -> list[FileDescriptor]:
    """Every compiled Fanbank proto: importing shared/gen/fanbank/<svc>/v<N>/*_pb2 modules."""
    files = []
    for path in sorted(GEN.glob("fanbank/*/v*/*_pb2.py")):
        module = ".".join(path.relative_to(GEN.parents[1]).with_suffix("").parts)
        files.append(importlib.import_module(module).DESCRIPTOR)
    return files


def backend_of(service_full_name: str) -> str:
    """The deployable that serves a Fanbank service: `fanbank.wallet.v1.X` → `wallet`."""
    package = service_full_name.rpartition(".")[0]
    match = _PACKAGE.fullmatch(package)
    if match is None:
        raise RuleError(f"{service_full_name}: package {package!r} is not fanbank.<service>.v<N>")
    return match.group(1)


def bindings(files: Iterable[FileDescriptor]) -> list[Binding]:
    """Every binding of every annotated RPC, most specific template first (so that
    `/v1/things/{name}:cancel` is tried before `/v1/things/{name}`)."""
    found: dict[tuple[str, str], Binding] = {}
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                for binding in _method_bindings(method):
                    if binding.key in found:
                        other = found[binding.key].method.full_name
                        raise RuleError(f"{binding.key} is bound twice: {other} and {method.full_name}")
                    found[binding.key] = binding
    return sorted(
        found.values(),
        key=lambda b: (not b.template.verb, -b.template.literal_segments, b.template.text, b.http_method),
    )


def _method_bindings(method: MethodDescriptor) -> list[Binding]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    if method.client_streaming:
        raise RuleError(f"{method.full_name}: client-streaming RPCs cannot be served over HTTP")
    rule = options.Extensions[annotations_pb2.http]
    result = [_binding(method, rule)]
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise RuleError(f"{method.full_name}: additional_bindings may not nest")
        result.append(_binding(method, extra))
    return result


def _binding(method: MethodDescriptor, rule) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RuleError(f"{method.full_name}: http rule has no pattern")
    if kind == "custom":
        http_method, text = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, text = kind.upper(), getattr(rule, kind)
    where = f"{method.full_name} ({http_method} {text})"
    request = method.input_type
    body_field = None
    if rule.body and rule.body != "*":
        body_field = request.fields_by_name.get(rule.body)
        if body_field is None:
            raise RuleError(f"{where}: body names no top-level field {rule.body!r}")
    if rule.body and http_method not in _BODY_METHODS:
        raise RuleError(f"{where}: a {http_method} request carries no body")
    response_body_field = None
    if rule.response_body:
        response_body_field = method.output_type.fields_by_name.get(rule.response_body)
        if response_body_field is None:
            raise RuleError(f"{where}: response_body names no top-level field {rule.response_body!r}")
    template = parse_template(text, request, where)
    return Binding(http_method, template, rule.body, body_field, response_body_field, method)


def resolve(message: Descriptor, path: str, json_names: bool = False) -> tuple[FieldDescriptor, ...]:
    """The fields along a dotted path; each step but the last must be a singular message."""
    fields = []
    current: Descriptor | None = message
    for part in path.split("."):
        if current is None:
            raise KeyError(path)
        field = current.fields_by_name.get(part)
        if field is None and json_names:
            field = next((f for f in current.fields if f.json_name == part), None)
        if field is None:
            raise KeyError(path)
        fields.append(field)
        nested = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        current = None if _is_repeated(field) else nested
    return tuple(fields)


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def parse_template(text: str, request: Descriptor, where: str = "") -> Template:
    if not text.startswith("/"):
        raise RuleError(f"{where}: template must start with '/'")
    path, verb = _split_verb(text, where)
    if verb and not _LITERAL.fullmatch(verb):
        raise RuleError(f"{where}: bad verb {verb!r}")
    patterns: list[str] = []
    openapi: list[str] = []
    variables: list[Variable] = []
    literals = 0
    for segment in _split_top(path[1:], where):
        if segment.startswith("{"):
            if not segment.endswith("}"):
                raise RuleError(f"{where}: unclosed variable in {segment!r}")
            name, _, inner = segment[1:-1].partition("=")
            inner = inner or "*"
            if not _FIELD_PATH.fullmatch(name):
                raise RuleError(f"{where}: bad field path {name!r}")
            fields = _path_fields(request, name, where)
            group = f"v{len(variables)}"
            variables.append(Variable(name, fields, group, inner))
            patterns.append(f"(?P<{group}>{'/'.join(_segment_pattern(s, where) for s in inner.split('/'))})")
            openapi.append("{" + name + "}")
        else:
            patterns.append(_segment_pattern(segment, where))
            openapi.append(segment)
            literals += segment not in ("*", "**")
    suffix = f":{verb}" if verb else ""
    regex = re.compile("^/" + "/".join(patterns) + re.escape(suffix) + "$")
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise RuleError(f"{where}: a field appears twice in the template")
    return Template(text, regex, tuple(variables), verb, literals, "/" + "/".join(openapi) + suffix)


def _path_fields(request: Descriptor, name: str, where: str) -> tuple[FieldDescriptor, ...]:
    try:
        fields = resolve(request, name)
    except KeyError:
        raise RuleError(f"{where}: {request.full_name} has no field {name!r}") from None
    leaf = fields[-1]
    if _is_repeated(leaf) or leaf.type == FieldDescriptor.TYPE_MESSAGE:
        raise RuleError(f"{where}: path variable {name!r} must be a singular scalar field")
    return fields


def _segment_pattern(segment: str, where: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".+"
    if not _LITERAL.fullmatch(segment):
        raise RuleError(f"{where}: bad path segment {segment!r}")
    return re.escape(segment)


def _split_verb(text: str, where: str) -> tuple[str, str]:
    """A verb is the ':' suffix of the last segment, outside any variable."""
    depth, colon = 0, -1
    for i, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and char == "/":
            colon = -1
        elif depth == 0 and char == ":" and colon < 0:
            colon = i
        if depth not in (0, 1):
            raise RuleError(f"{where}: unbalanced braces")
    if depth != 0:
        raise RuleError(f"{where}: unbalanced braces")
    return (text[:colon], text[colon + 1 :]) if colon >= 0 else (text, "")


def _split_top(path: str, where: str) -> list[str]:
    segments, depth, start = [], 0, 0
    for i, char in enumerate(path):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "/" and depth == 0:
            segments.append(path[start:i])
            start = i + 1
    segments.append(path[start:])
    if any(not s for s in segments):
        raise RuleError(f"{where}: empty path segment")
    return segments
