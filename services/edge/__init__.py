"""The REST edge: HTTP/JSON and SSE routes generated from the protos' `google.api.http` rules."""
