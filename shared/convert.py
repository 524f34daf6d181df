"""Small conversions between Python values and protobuf well-known types."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: dt.datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message
