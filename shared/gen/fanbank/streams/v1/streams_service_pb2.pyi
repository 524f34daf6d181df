import datetime

from shared.gen.fanbank.gifts.v1 import gift_events_pb2 as _gift_events_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_PUBLIC: _ClassVar[StreamKind]
    STREAM_KIND_PRIVATE: _ClassVar[StreamKind]
    STREAM_KIND_PREMIUM: _ClassVar[StreamKind]

class StreamStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_STATUS_UNSPECIFIED: _ClassVar[StreamStatus]
    STREAM_STATUS_SCHEDULED: _ClassVar[StreamStatus]
    STREAM_STATUS_LIVE: _ClassVar[StreamStatus]
    STREAM_STATUS_ENDED: _ClassVar[StreamStatus]
    STREAM_STATUS_CANCELLED: _ClassVar[StreamStatus]

class TicketStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TICKET_STATUS_UNSPECIFIED: _ClassVar[TicketStatus]
    TICKET_STATUS_VALID: _ClassVar[TicketStatus]
    TICKET_STATUS_REFUND_PENDING: _ClassVar[TicketStatus]
    TICKET_STATUS_REFUNDED: _ClassVar[TicketStatus]
    TICKET_STATUS_REFUND_FAILED: _ClassVar[TicketStatus]

class AccessGrant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_GRANT_UNSPECIFIED: _ClassVar[AccessGrant]
    ACCESS_GRANT_PUBLIC: _ClassVar[AccessGrant]
    ACCESS_GRANT_CREATOR: _ClassVar[AccessGrant]
    ACCESS_GRANT_TICKET: _ClassVar[AccessGrant]
    ACCESS_GRANT_STAFF: _ClassVar[AccessGrant]

class StreamEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_EVENT_TYPE_UNSPECIFIED: _ClassVar[StreamEventType]
    STREAM_EVENT_TYPE_STARTED: _ClassVar[StreamEventType]
    STREAM_EVENT_TYPE_ENDED: _ClassVar[StreamEventType]
    STREAM_EVENT_TYPE_CANCELLED: _ClassVar[StreamEventType]
    STREAM_EVENT_TYPE_TICKET_SOLD: _ClassVar[StreamEventType]
    STREAM_EVENT_TYPE_VIEWER_COUNT: _ClassVar[StreamEventType]
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_PUBLIC: StreamKind
STREAM_KIND_PRIVATE: StreamKind
STREAM_KIND_PREMIUM: StreamKind
STREAM_STATUS_UNSPECIFIED: StreamStatus
STREAM_STATUS_SCHEDULED: StreamStatus
STREAM_STATUS_LIVE: StreamStatus
STREAM_STATUS_ENDED: StreamStatus
STREAM_STATUS_CANCELLED: StreamStatus
TICKET_STATUS_UNSPECIFIED: TicketStatus
TICKET_STATUS_VALID: TicketStatus
TICKET_STATUS_REFUND_PENDING: TicketStatus
TICKET_STATUS_REFUNDED: TicketStatus
TICKET_STATUS_REFUND_FAILED: TicketStatus
ACCESS_GRANT_UNSPECIFIED: AccessGrant
ACCESS_GRANT_PUBLIC: AccessGrant
ACCESS_GRANT_CREATOR: AccessGrant
ACCESS_GRANT_TICKET: AccessGrant
ACCESS_GRANT_STAFF: AccessGrant
STREAM_EVENT_TYPE_UNSPECIFIED: StreamEventType
STREAM_EVENT_TYPE_STARTED: StreamEventType
STREAM_EVENT_TYPE_ENDED: StreamEventType
STREAM_EVENT_TYPE_CANCELLED: StreamEventType
STREAM_EVENT_TYPE_TICKET_SOLD: StreamEventType
STREAM_EVENT_TYPE_VIEWER_COUNT: StreamEventType

class Stream(_message.Message):
    __slots__ = ("stream_id", "creator_id", "title", "kind", "status", "price_tokens", "fee_bps", "viewer_cap", "invite_only", "tickets_sold", "viewer_count", "scheduled_start_time", "create_time", "start_time", "end_time", "cancel_time")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    VIEWER_CAP_FIELD_NUMBER: _ClassVar[int]
    INVITE_ONLY_FIELD_NUMBER: _ClassVar[int]
    TICKETS_SOLD_FIELD_NUMBER: _ClassVar[int]
    VIEWER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_START_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TIME_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    creator_id: str
    title: str
    kind: StreamKind
    status: StreamStatus
    price_tokens: int
    fee_bps: int
    viewer_cap: int
    invite_only: bool
    tickets_sold: int
    viewer_count: int
    scheduled_start_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    cancel_time: _timestamp_pb2.Timestamp
    def __init__(self, stream_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., title: _Optional[str] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., status: _Optional[_Union[StreamStatus, str]] = ..., price_tokens: _Optional[int] = ..., fee_bps: _Optional[int] = ..., viewer_cap: _Optional[int] = ..., invite_only: _Optional[bool] = ..., tickets_sold: _Optional[int] = ..., viewer_count: _Optional[int] = ..., scheduled_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Ticket(_message.Message):
    __slots__ = ("ticket_id", "stream_id", "fan_id", "creator_id", "price_tokens", "fee_tokens", "fee_bps", "status", "refund_failure_reason", "purchase_time", "refund_time")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFUND_FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_TIME_FIELD_NUMBER: _ClassVar[int]
    REFUND_TIME_FIELD_NUMBER: _ClassVar[int]
    ticket_id: str
    stream_id: str
    fan_id: str
    creator_id: str
    price_tokens: int
    fee_tokens: int
    fee_bps: int
    status: TicketStatus
    refund_failure_reason: str
    purchase_time: _timestamp_pb2.Timestamp
    refund_time: _timestamp_pb2.Timestamp
    def __init__(self, ticket_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., price_tokens: _Optional[int] = ..., fee_tokens: _Optional[int] = ..., fee_bps: _Optional[int] = ..., status: _Optional[_Union[TicketStatus, str]] = ..., refund_failure_reason: _Optional[str] = ..., purchase_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refund_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("type", "stream_id", "creator_id", "fan_id", "ticket_id", "tickets_sold", "viewer_count", "event_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    TICKETS_SOLD_FIELD_NUMBER: _ClassVar[int]
    VIEWER_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    type: StreamEventType
    stream_id: str
    creator_id: str
    fan_id: str
    ticket_id: str
    tickets_sold: int
    viewer_count: int
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[_Union[StreamEventType, str]] = ..., stream_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., ticket_id: _Optional[str] = ..., tickets_sold: _Optional[int] = ..., viewer_count: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateStreamRequest(_message.Message):
    __slots__ = ("request_id", "creator_id", "title", "kind", "price_tokens", "viewer_cap", "invite_only", "invited_user_ids", "scheduled_start_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VIEWER_CAP_FIELD_NUMBER: _ClassVar[int]
    INVITE_ONLY_FIELD_NUMBER: _ClassVar[int]
    INVITED_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_START_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    creator_id: str
    title: str
    kind: StreamKind
    price_tokens: int
    viewer_cap: int
    invite_only: bool
    invited_user_ids: _containers.RepeatedScalarFieldContainer[str]
    scheduled_start_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., title: _Optional[str] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., price_tokens: _Optional[int] = ..., viewer_cap: _Optional[int] = ..., invite_only: _Optional[bool] = ..., invited_user_ids: _Optional[_Iterable[str]] = ..., scheduled_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class GetStreamRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class GetStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class ListCreatorStreamsRequest(_message.Message):
    __slots__ = ("creator_id", "status", "page_size", "page_token")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    status: StreamStatus
    page_size: int
    page_token: str
    def __init__(self, creator_id: _Optional[str] = ..., status: _Optional[_Union[StreamStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCreatorStreamsResponse(_message.Message):
    __slots__ = ("streams", "next_page_token")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[Stream]
    next_page_token: str
    def __init__(self, streams: _Optional[_Iterable[_Union[Stream, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StartStreamRequest(_message.Message):
    __slots__ = ("request_id", "stream_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class StartStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class EndStreamRequest(_message.Message):
    __slots__ = ("request_id", "stream_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class EndStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class CancelStreamRequest(_message.Message):
    __slots__ = ("request_id", "stream_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class CancelStreamResponse(_message.Message):
    __slots__ = ("stream", "tickets_refunded", "refunds_pending", "refunds_failed")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TICKETS_REFUNDED_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_PENDING_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FAILED_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    tickets_refunded: int
    refunds_pending: int
    refunds_failed: int
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ..., tickets_refunded: _Optional[int] = ..., refunds_pending: _Optional[int] = ..., refunds_failed: _Optional[int] = ...) -> None: ...

class UpdateInvitesRequest(_message.Message):
    __slots__ = ("request_id", "stream_id", "add_user_ids", "remove_user_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ADD_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    add_user_ids: _containers.RepeatedScalarFieldContainer[str]
    remove_user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., add_user_ids: _Optional[_Iterable[str]] = ..., remove_user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateInvitesResponse(_message.Message):
    __slots__ = ("stream_id", "invite_count")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    INVITE_COUNT_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    invite_count: int
    def __init__(self, stream_id: _Optional[str] = ..., invite_count: _Optional[int] = ...) -> None: ...

class ListInvitesRequest(_message.Message):
    __slots__ = ("stream_id", "page_size", "page_token")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    page_size: int
    page_token: str
    def __init__(self, stream_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInvitesResponse(_message.Message):
    __slots__ = ("user_ids", "next_page_token")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PurchaseTicketRequest(_message.Message):
    __slots__ = ("request_id", "stream_id", "fan_id", "price_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    fan_id: str
    price_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., price_tokens: _Optional[int] = ...) -> None: ...

class PurchaseTicketResponse(_message.Message):
    __slots__ = ("ticket", "charged")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    ticket: Ticket
    charged: bool
    def __init__(self, ticket: _Optional[_Union[Ticket, _Mapping]] = ..., charged: _Optional[bool] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("stream_id", "user_id")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    user_id: str
    def __init__(self, stream_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class CheckAccessResponse(_message.Message):
    __slots__ = ("allowed", "grant", "denial_reason", "ticket")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    DENIAL_REASON_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    grant: AccessGrant
    denial_reason: str
    ticket: Ticket
    def __init__(self, allowed: _Optional[bool] = ..., grant: _Optional[_Union[AccessGrant, str]] = ..., denial_reason: _Optional[str] = ..., ticket: _Optional[_Union[Ticket, _Mapping]] = ...) -> None: ...

class JoinStreamRequest(_message.Message):
    __slots__ = ("request_id", "stream_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class JoinStreamResponse(_message.Message):
    __slots__ = ("viewer_count", "presence_expire_time")
    VIEWER_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    viewer_count: int
    presence_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, viewer_count: _Optional[int] = ..., presence_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LeaveStreamRequest(_message.Message):
    __slots__ = ("request_id", "stream_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class LeaveStreamResponse(_message.Message):
    __slots__ = ("viewer_count",)
    VIEWER_COUNT_FIELD_NUMBER: _ClassVar[int]
    viewer_count: int
    def __init__(self, viewer_count: _Optional[int] = ...) -> None: ...

class WatchStreamRequest(_message.Message):
    __slots__ = ("stream_id", "resume_token")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    resume_token: str
    def __init__(self, stream_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchStreamResponse(_message.Message):
    __slots__ = ("stream_event", "gift_event", "resume_token")
    STREAM_EVENT_FIELD_NUMBER: _ClassVar[int]
    GIFT_EVENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    stream_event: StreamEvent
    gift_event: _gift_events_pb2.GiftEvent
    resume_token: str
    def __init__(self, stream_event: _Optional[_Union[StreamEvent, _Mapping]] = ..., gift_event: _Optional[_Union[_gift_events_pb2.GiftEvent, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...
