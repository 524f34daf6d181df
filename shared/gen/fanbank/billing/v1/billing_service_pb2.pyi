import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_STATUS_UNSPECIFIED: _ClassVar[CallStatus]
    CALL_STATUS_ACTIVE: _ClassVar[CallStatus]
    CALL_STATUS_PAUSED: _ClassVar[CallStatus]
    CALL_STATUS_ENDED: _ClassVar[CallStatus]
    CALL_STATUS_FAILED: _ClassVar[CallStatus]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_FAN_ENDED: _ClassVar[EndReason]
    END_REASON_CREATOR_ENDED: _ClassVar[EndReason]
    END_REASON_MEDIA_SERVER_ENDED: _ClassVar[EndReason]
    END_REASON_ADMIN_ENDED: _ClassVar[EndReason]
    END_REASON_INSUFFICIENT_FUNDS: _ClassVar[EndReason]
    END_REASON_HEARTBEAT_LOST: _ClassVar[EndReason]
    END_REASON_PAUSE_TOO_LONG: _ClassVar[EndReason]
    END_REASON_START_FAILED: _ClassVar[EndReason]
    END_REASON_CHARGE_FAILED: _ClassVar[EndReason]
    END_REASON_START_ABANDONED: _ClassVar[EndReason]
    END_REASON_ROOM_CLOSED: _ClassVar[EndReason]

class CallEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_EVENT_TYPE_UNSPECIFIED: _ClassVar[CallEventType]
    CALL_EVENT_TYPE_STARTED: _ClassVar[CallEventType]
    CALL_EVENT_TYPE_BLOCK_CHARGED: _ClassVar[CallEventType]
    CALL_EVENT_TYPE_LOW_BALANCE_WARNING: _ClassVar[CallEventType]
    CALL_EVENT_TYPE_PAUSED: _ClassVar[CallEventType]
    CALL_EVENT_TYPE_RESUMED: _ClassVar[CallEventType]
    CALL_EVENT_TYPE_ENDED: _ClassVar[CallEventType]
CALL_STATUS_UNSPECIFIED: CallStatus
CALL_STATUS_ACTIVE: CallStatus
CALL_STATUS_PAUSED: CallStatus
CALL_STATUS_ENDED: CallStatus
CALL_STATUS_FAILED: CallStatus
END_REASON_UNSPECIFIED: EndReason
END_REASON_FAN_ENDED: EndReason
END_REASON_CREATOR_ENDED: EndReason
END_REASON_MEDIA_SERVER_ENDED: EndReason
END_REASON_ADMIN_ENDED: EndReason
END_REASON_INSUFFICIENT_FUNDS: EndReason
END_REASON_HEARTBEAT_LOST: EndReason
END_REASON_PAUSE_TOO_LONG: EndReason
END_REASON_START_FAILED: EndReason
END_REASON_CHARGE_FAILED: EndReason
END_REASON_START_ABANDONED: EndReason
END_REASON_ROOM_CLOSED: EndReason
CALL_EVENT_TYPE_UNSPECIFIED: CallEventType
CALL_EVENT_TYPE_STARTED: CallEventType
CALL_EVENT_TYPE_BLOCK_CHARGED: CallEventType
CALL_EVENT_TYPE_LOW_BALANCE_WARNING: CallEventType
CALL_EVENT_TYPE_PAUSED: CallEventType
CALL_EVENT_TYPE_RESUMED: CallEventType
CALL_EVENT_TYPE_ENDED: CallEventType

class CallSettings(_message.Message):
    __slots__ = ("creator_id", "rate_tokens_per_minute", "available", "update_time")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    rate_tokens_per_minute: int
    available: bool
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, creator_id: _Optional[str] = ..., rate_tokens_per_minute: _Optional[int] = ..., available: _Optional[bool] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("call_id", "fan_id", "creator_id", "status", "rate_tokens_per_minute", "tokens_per_block", "block_seconds", "fee_bps", "media_channel", "media_node", "blocks_charged", "tokens_charged", "fee_tokens", "billed_seconds", "end_reason", "start_time", "end_time", "next_block_time")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RATE_TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_BLOCK_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MEDIA_NODE_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    FEE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_BLOCK_TIME_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    fan_id: str
    creator_id: str
    status: CallStatus
    rate_tokens_per_minute: int
    tokens_per_block: int
    block_seconds: int
    fee_bps: int
    media_channel: str
    media_node: str
    blocks_charged: int
    tokens_charged: int
    fee_tokens: int
    billed_seconds: int
    end_reason: EndReason
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    next_block_time: _timestamp_pb2.Timestamp
    def __init__(self, call_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., status: _Optional[_Union[CallStatus, str]] = ..., rate_tokens_per_minute: _Optional[int] = ..., tokens_per_block: _Optional[int] = ..., block_seconds: _Optional[int] = ..., fee_bps: _Optional[int] = ..., media_channel: _Optional[str] = ..., media_node: _Optional[str] = ..., blocks_charged: _Optional[int] = ..., tokens_charged: _Optional[int] = ..., fee_tokens: _Optional[int] = ..., billed_seconds: _Optional[int] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_block_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CallEvent(_message.Message):
    __slots__ = ("type", "call_id", "fan_id", "creator_id", "media_node", "block_no", "tokens", "end_reason", "event_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_NODE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_NO_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    type: CallEventType
    call_id: str
    fan_id: str
    creator_id: str
    media_node: str
    block_no: int
    tokens: int
    end_reason: EndReason
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[_Union[CallEventType, str]] = ..., call_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., media_node: _Optional[str] = ..., block_no: _Optional[int] = ..., tokens: _Optional[int] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetCallSettingsRequest(_message.Message):
    __slots__ = ("creator_id", "rate_tokens_per_minute", "available")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    rate_tokens_per_minute: int
    available: bool
    def __init__(self, creator_id: _Optional[str] = ..., rate_tokens_per_minute: _Optional[int] = ..., available: _Optional[bool] = ...) -> None: ...

class SetCallSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: CallSettings
    def __init__(self, settings: _Optional[_Union[CallSettings, _Mapping]] = ...) -> None: ...

class GetCallSettingsRequest(_message.Message):
    __slots__ = ("creator_id",)
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    def __init__(self, creator_id: _Optional[str] = ...) -> None: ...

class GetCallSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: CallSettings
    def __init__(self, settings: _Optional[_Union[CallSettings, _Mapping]] = ...) -> None: ...

class StartCallRequest(_message.Message):
    __slots__ = ("request_id", "fan_id", "creator_id", "rate_tokens_per_minute", "media_node")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_NODE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    fan_id: str
    creator_id: str
    rate_tokens_per_minute: int
    media_node: str
    def __init__(self, request_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., rate_tokens_per_minute: _Optional[int] = ..., media_node: _Optional[str] = ...) -> None: ...

class StartCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("call_id", "media_node")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_NODE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    media_node: str
    def __init__(self, call_id: _Optional[str] = ..., media_node: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: CallStatus
    def __init__(self, status: _Optional[_Union[CallStatus, str]] = ...) -> None: ...

class HeartbeatCallsRequest(_message.Message):
    __slots__ = ("media_node", "call_ids")
    MEDIA_NODE_FIELD_NUMBER: _ClassVar[int]
    CALL_IDS_FIELD_NUMBER: _ClassVar[int]
    media_node: str
    call_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, media_node: _Optional[str] = ..., call_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatCallsResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[CallLease]
    def __init__(self, leases: _Optional[_Iterable[_Union[CallLease, _Mapping]]] = ...) -> None: ...

class ReceiveMediaWebhookRequest(_message.Message):
    __slots__ = ("body", "authorization")
    BODY_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    authorization: str
    def __init__(self, body: _Optional[bytes] = ..., authorization: _Optional[str] = ...) -> None: ...

class ReceiveMediaWebhookResponse(_message.Message):
    __slots__ = ("event_id", "event", "duplicate", "call_id", "call_ended")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ENDED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event: str
    duplicate: bool
    call_id: str
    call_ended: bool
    def __init__(self, event_id: _Optional[str] = ..., event: _Optional[str] = ..., duplicate: _Optional[bool] = ..., call_id: _Optional[str] = ..., call_ended: _Optional[bool] = ...) -> None: ...

class CallLease(_message.Message):
    __slots__ = ("call_id", "status")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    status: CallStatus
    def __init__(self, call_id: _Optional[str] = ..., status: _Optional[_Union[CallStatus, str]] = ...) -> None: ...

class PauseCallRequest(_message.Message):
    __slots__ = ("request_id", "call_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    call_id: str
    def __init__(self, request_id: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class PauseCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class ResumeCallRequest(_message.Message):
    __slots__ = ("request_id", "call_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    call_id: str
    def __init__(self, request_id: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class ResumeCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class EndCallRequest(_message.Message):
    __slots__ = ("request_id", "call_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    call_id: str
    def __init__(self, request_id: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class EndCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class GetCallRequest(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class GetCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class ListCallsRequest(_message.Message):
    __slots__ = ("fan_id", "creator_id", "page_size", "page_token")
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fan_id: str
    creator_id: str
    page_size: int
    page_token: str
    def __init__(self, fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCallsResponse(_message.Message):
    __slots__ = ("calls", "next_page_token")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[Call]
    next_page_token: str
    def __init__(self, calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCallStatsRequest(_message.Message):
    __slots__ = ("creator_id",)
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    def __init__(self, creator_id: _Optional[str] = ...) -> None: ...

class GetCallStatsResponse(_message.Message):
    __slots__ = ("creator_id", "calls", "blocks_charged", "tokens_charged", "fee_tokens", "billed_seconds")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    FEE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    calls: int
    blocks_charged: int
    tokens_charged: int
    fee_tokens: int
    billed_seconds: int
    def __init__(self, creator_id: _Optional[str] = ..., calls: _Optional[int] = ..., blocks_charged: _Optional[int] = ..., tokens_charged: _Optional[int] = ..., fee_tokens: _Optional[int] = ..., billed_seconds: _Optional[int] = ...) -> None: ...

class WatchCallRequest(_message.Message):
    __slots__ = ("call_id", "resume_token")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    resume_token: str
    def __init__(self, call_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchCallResponse(_message.Message):
    __slots__ = ("event", "resume_token")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event: CallEvent
    resume_token: str
    def __init__(self, event: _Optional[_Union[CallEvent, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchNodeCallsRequest(_message.Message):
    __slots__ = ("media_node", "resume_token")
    MEDIA_NODE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    media_node: str
    resume_token: str
    def __init__(self, media_node: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchNodeCallsResponse(_message.Message):
    __slots__ = ("event", "resume_token")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event: CallEvent
    resume_token: str
    def __init__(self, event: _Optional[_Union[CallEvent, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...
