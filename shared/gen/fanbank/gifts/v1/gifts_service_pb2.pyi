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

class TipKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIP_KIND_UNSPECIFIED: _ClassVar[TipKind]
    TIP_KIND_TIP: _ClassVar[TipKind]
    TIP_KIND_GIFT: _ClassVar[TipKind]
    TIP_KIND_LIKE: _ClassVar[TipKind]

class TipStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIP_STATUS_UNSPECIFIED: _ClassVar[TipStatus]
    TIP_STATUS_PENDING: _ClassVar[TipStatus]
    TIP_STATUS_COMPLETED: _ClassVar[TipStatus]
    TIP_STATUS_FAILED: _ClassVar[TipStatus]

class ContextType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_TYPE_UNSPECIFIED: _ClassVar[ContextType]
    CONTEXT_TYPE_STREAM: _ClassVar[ContextType]
    CONTEXT_TYPE_CALL: _ClassVar[ContextType]
    CONTEXT_TYPE_POST: _ClassVar[ContextType]
    CONTEXT_TYPE_PROFILE: _ClassVar[ContextType]
    CONTEXT_TYPE_COMMENT: _ClassVar[ContextType]

class Period(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERIOD_UNSPECIFIED: _ClassVar[Period]
    PERIOD_DAY: _ClassVar[Period]
    PERIOD_ISO_WEEK: _ClassVar[Period]
    PERIOD_MONTH: _ClassVar[Period]
    PERIOD_ALL_TIME: _ClassVar[Period]
TIP_KIND_UNSPECIFIED: TipKind
TIP_KIND_TIP: TipKind
TIP_KIND_GIFT: TipKind
TIP_KIND_LIKE: TipKind
TIP_STATUS_UNSPECIFIED: TipStatus
TIP_STATUS_PENDING: TipStatus
TIP_STATUS_COMPLETED: TipStatus
TIP_STATUS_FAILED: TipStatus
CONTEXT_TYPE_UNSPECIFIED: ContextType
CONTEXT_TYPE_STREAM: ContextType
CONTEXT_TYPE_CALL: ContextType
CONTEXT_TYPE_POST: ContextType
CONTEXT_TYPE_PROFILE: ContextType
CONTEXT_TYPE_COMMENT: ContextType
PERIOD_UNSPECIFIED: Period
PERIOD_DAY: Period
PERIOD_ISO_WEEK: Period
PERIOD_MONTH: Period
PERIOD_ALL_TIME: Period

class Gift(_message.Message):
    __slots__ = ("gift_id", "name", "price_tokens", "category", "rarity", "active", "featured", "limited", "sort_order", "image_url", "animation_url", "create_time", "update_time")
    GIFT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    RARITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    FEATURED_FIELD_NUMBER: _ClassVar[int]
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    SORT_ORDER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    ANIMATION_URL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    gift_id: str
    name: str
    price_tokens: int
    category: str
    rarity: str
    active: bool
    featured: bool
    limited: bool
    sort_order: int
    image_url: str
    animation_url: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, gift_id: _Optional[str] = ..., name: _Optional[str] = ..., price_tokens: _Optional[int] = ..., category: _Optional[str] = ..., rarity: _Optional[str] = ..., active: _Optional[bool] = ..., featured: _Optional[bool] = ..., limited: _Optional[bool] = ..., sort_order: _Optional[int] = ..., image_url: _Optional[str] = ..., animation_url: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Tip(_message.Message):
    __slots__ = ("tip_id", "kind", "status", "sender_id", "creator_id", "sender_display_name", "amount_tokens", "fee_tokens", "creator_tokens", "fee_bps", "message", "message_hidden", "context_type", "context_id", "gift_id", "gift_name", "quantity", "unit_price_tokens", "failure_reason", "create_time", "complete_time")
    TIP_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATOR_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_NAME_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    tip_id: str
    kind: TipKind
    status: TipStatus
    sender_id: str
    creator_id: str
    sender_display_name: str
    amount_tokens: int
    fee_tokens: int
    creator_tokens: int
    fee_bps: int
    message: str
    message_hidden: bool
    context_type: ContextType
    context_id: str
    gift_id: str
    gift_name: str
    quantity: int
    unit_price_tokens: int
    failure_reason: str
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    def __init__(self, tip_id: _Optional[str] = ..., kind: _Optional[_Union[TipKind, str]] = ..., status: _Optional[_Union[TipStatus, str]] = ..., sender_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., sender_display_name: _Optional[str] = ..., amount_tokens: _Optional[int] = ..., fee_tokens: _Optional[int] = ..., creator_tokens: _Optional[int] = ..., fee_bps: _Optional[int] = ..., message: _Optional[str] = ..., message_hidden: _Optional[bool] = ..., context_type: _Optional[_Union[ContextType, str]] = ..., context_id: _Optional[str] = ..., gift_id: _Optional[str] = ..., gift_name: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price_tokens: _Optional[int] = ..., failure_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateGiftRequest(_message.Message):
    __slots__ = ("request_id", "gift")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    gift: Gift
    def __init__(self, request_id: _Optional[str] = ..., gift: _Optional[_Union[Gift, _Mapping]] = ...) -> None: ...

class CreateGiftResponse(_message.Message):
    __slots__ = ("gift",)
    GIFT_FIELD_NUMBER: _ClassVar[int]
    gift: Gift
    def __init__(self, gift: _Optional[_Union[Gift, _Mapping]] = ...) -> None: ...

class UpdateGiftRequest(_message.Message):
    __slots__ = ("request_id", "gift_id", "gift")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    gift_id: str
    gift: Gift
    def __init__(self, request_id: _Optional[str] = ..., gift_id: _Optional[str] = ..., gift: _Optional[_Union[Gift, _Mapping]] = ...) -> None: ...

class UpdateGiftResponse(_message.Message):
    __slots__ = ("gift",)
    GIFT_FIELD_NUMBER: _ClassVar[int]
    gift: Gift
    def __init__(self, gift: _Optional[_Union[Gift, _Mapping]] = ...) -> None: ...

class DeactivateGiftRequest(_message.Message):
    __slots__ = ("request_id", "gift_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    gift_id: str
    def __init__(self, request_id: _Optional[str] = ..., gift_id: _Optional[str] = ...) -> None: ...

class DeactivateGiftResponse(_message.Message):
    __slots__ = ("gift",)
    GIFT_FIELD_NUMBER: _ClassVar[int]
    gift: Gift
    def __init__(self, gift: _Optional[_Union[Gift, _Mapping]] = ...) -> None: ...

class ListGiftsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "category")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    category: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class ListGiftsResponse(_message.Message):
    __slots__ = ("gifts", "next_page_token")
    GIFTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    gifts: _containers.RepeatedCompositeFieldContainer[Gift]
    next_page_token: str
    def __init__(self, gifts: _Optional[_Iterable[_Union[Gift, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SendTipRequest(_message.Message):
    __slots__ = ("request_id", "sender_id", "creator_id", "amount_tokens", "message", "sender_display_name", "context_type", "context_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SENDER_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sender_id: str
    creator_id: str
    amount_tokens: int
    message: str
    sender_display_name: str
    context_type: ContextType
    context_id: str
    def __init__(self, request_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., amount_tokens: _Optional[int] = ..., message: _Optional[str] = ..., sender_display_name: _Optional[str] = ..., context_type: _Optional[_Union[ContextType, str]] = ..., context_id: _Optional[str] = ...) -> None: ...

class SendTipResponse(_message.Message):
    __slots__ = ("tip",)
    TIP_FIELD_NUMBER: _ClassVar[int]
    tip: Tip
    def __init__(self, tip: _Optional[_Union[Tip, _Mapping]] = ...) -> None: ...

class SendGiftRequest(_message.Message):
    __slots__ = ("request_id", "sender_id", "creator_id", "gift_id", "quantity", "price_tokens", "message", "sender_display_name", "context_type", "context_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SENDER_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sender_id: str
    creator_id: str
    gift_id: str
    quantity: int
    price_tokens: int
    message: str
    sender_display_name: str
    context_type: ContextType
    context_id: str
    def __init__(self, request_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., gift_id: _Optional[str] = ..., quantity: _Optional[int] = ..., price_tokens: _Optional[int] = ..., message: _Optional[str] = ..., sender_display_name: _Optional[str] = ..., context_type: _Optional[_Union[ContextType, str]] = ..., context_id: _Optional[str] = ...) -> None: ...

class SendGiftResponse(_message.Message):
    __slots__ = ("tip",)
    TIP_FIELD_NUMBER: _ClassVar[int]
    tip: Tip
    def __init__(self, tip: _Optional[_Union[Tip, _Mapping]] = ...) -> None: ...

class LikeTipRequest(_message.Message):
    __slots__ = ("request_id", "sender_id", "creator_id", "context_type", "context_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sender_id: str
    creator_id: str
    context_type: ContextType
    context_id: str
    def __init__(self, request_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., context_type: _Optional[_Union[ContextType, str]] = ..., context_id: _Optional[str] = ...) -> None: ...

class LikeTipResponse(_message.Message):
    __slots__ = ("tip", "already_paid")
    TIP_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PAID_FIELD_NUMBER: _ClassVar[int]
    tip: Tip
    already_paid: bool
    def __init__(self, tip: _Optional[_Union[Tip, _Mapping]] = ..., already_paid: _Optional[bool] = ...) -> None: ...

class ListTipsRequest(_message.Message):
    __slots__ = ("sender_id", "creator_id", "page_size", "page_token")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    creator_id: str
    page_size: int
    page_token: str
    def __init__(self, sender_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTipsResponse(_message.Message):
    __slots__ = ("tips", "next_page_token")
    TIPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tips: _containers.RepeatedCompositeFieldContainer[Tip]
    next_page_token: str
    def __init__(self, tips: _Optional[_Iterable[_Union[Tip, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetTipStatsRequest(_message.Message):
    __slots__ = ("creator_id", "period", "date")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    period: Period
    date: str
    def __init__(self, creator_id: _Optional[str] = ..., period: _Optional[_Union[Period, str]] = ..., date: _Optional[str] = ...) -> None: ...

class TipTotal(_message.Message):
    __slots__ = ("kind", "context_type", "count", "gross_tokens", "fee_tokens", "creator_tokens")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROSS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATOR_TOKENS_FIELD_NUMBER: _ClassVar[int]
    kind: TipKind
    context_type: ContextType
    count: int
    gross_tokens: int
    fee_tokens: int
    creator_tokens: int
    def __init__(self, kind: _Optional[_Union[TipKind, str]] = ..., context_type: _Optional[_Union[ContextType, str]] = ..., count: _Optional[int] = ..., gross_tokens: _Optional[int] = ..., fee_tokens: _Optional[int] = ..., creator_tokens: _Optional[int] = ...) -> None: ...

class GetTipStatsResponse(_message.Message):
    __slots__ = ("creator_id", "period", "start_date", "end_date", "totals", "count", "gross_tokens", "fee_tokens", "creator_tokens")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROSS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATOR_TOKENS_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    period: Period
    start_date: str
    end_date: str
    totals: _containers.RepeatedCompositeFieldContainer[TipTotal]
    count: int
    gross_tokens: int
    fee_tokens: int
    creator_tokens: int
    def __init__(self, creator_id: _Optional[str] = ..., period: _Optional[_Union[Period, str]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., totals: _Optional[_Iterable[_Union[TipTotal, _Mapping]]] = ..., count: _Optional[int] = ..., gross_tokens: _Optional[int] = ..., fee_tokens: _Optional[int] = ..., creator_tokens: _Optional[int] = ...) -> None: ...

class GetLeaderboardRequest(_message.Message):
    __slots__ = ("creator_id", "stream_id", "period", "date", "limit")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    stream_id: str
    period: Period
    date: str
    limit: int
    def __init__(self, creator_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., period: _Optional[_Union[Period, str]] = ..., date: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class LeaderboardEntry(_message.Message):
    __slots__ = ("rank", "sender_id", "sender_display_name", "amount_tokens", "tip_count")
    RANK_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIP_COUNT_FIELD_NUMBER: _ClassVar[int]
    rank: int
    sender_id: str
    sender_display_name: str
    amount_tokens: int
    tip_count: int
    def __init__(self, rank: _Optional[int] = ..., sender_id: _Optional[str] = ..., sender_display_name: _Optional[str] = ..., amount_tokens: _Optional[int] = ..., tip_count: _Optional[int] = ...) -> None: ...

class GetLeaderboardResponse(_message.Message):
    __slots__ = ("creator_id", "stream_id", "period", "start_date", "end_date", "entries")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    stream_id: str
    period: Period
    start_date: str
    end_date: str
    entries: _containers.RepeatedCompositeFieldContainer[LeaderboardEntry]
    def __init__(self, creator_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., period: _Optional[_Union[Period, str]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[LeaderboardEntry, _Mapping]]] = ...) -> None: ...

class Goal(_message.Message):
    __slots__ = ("goal_id", "creator_id", "stream_id", "title", "target_tokens", "progress_tokens", "reached", "create_time", "reach_time")
    GOAL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REACHED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REACH_TIME_FIELD_NUMBER: _ClassVar[int]
    goal_id: str
    creator_id: str
    stream_id: str
    title: str
    target_tokens: int
    progress_tokens: int
    reached: bool
    create_time: _timestamp_pb2.Timestamp
    reach_time: _timestamp_pb2.Timestamp
    def __init__(self, goal_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., title: _Optional[str] = ..., target_tokens: _Optional[int] = ..., progress_tokens: _Optional[int] = ..., reached: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reach_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetGoalRequest(_message.Message):
    __slots__ = ("request_id", "creator_id", "stream_id", "title", "target_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    creator_id: str
    stream_id: str
    title: str
    target_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., title: _Optional[str] = ..., target_tokens: _Optional[int] = ...) -> None: ...

class SetGoalResponse(_message.Message):
    __slots__ = ("goal",)
    GOAL_FIELD_NUMBER: _ClassVar[int]
    goal: Goal
    def __init__(self, goal: _Optional[_Union[Goal, _Mapping]] = ...) -> None: ...

class GetGoalRequest(_message.Message):
    __slots__ = ("creator_id", "stream_id")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    stream_id: str
    def __init__(self, creator_id: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class GetGoalResponse(_message.Message):
    __slots__ = ("goal",)
    GOAL_FIELD_NUMBER: _ClassVar[int]
    goal: Goal
    def __init__(self, goal: _Optional[_Union[Goal, _Mapping]] = ...) -> None: ...

class HideMessageRequest(_message.Message):
    __slots__ = ("request_id", "tip_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIP_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tip_id: str
    def __init__(self, request_id: _Optional[str] = ..., tip_id: _Optional[str] = ...) -> None: ...

class HideMessageResponse(_message.Message):
    __slots__ = ("tip",)
    TIP_FIELD_NUMBER: _ClassVar[int]
    tip: Tip
    def __init__(self, tip: _Optional[_Union[Tip, _Mapping]] = ...) -> None: ...

class WatchCreatorAlertsRequest(_message.Message):
    __slots__ = ("creator_id", "resume_token", "overlay_token")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    resume_token: str
    overlay_token: str
    def __init__(self, creator_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., overlay_token: _Optional[str] = ...) -> None: ...

class WatchCreatorAlertsResponse(_message.Message):
    __slots__ = ("event", "resume_token")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event: _gift_events_pb2.GiftEvent
    resume_token: str
    def __init__(self, event: _Optional[_Union[_gift_events_pb2.GiftEvent, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class RotateOverlayTokenRequest(_message.Message):
    __slots__ = ("request_id", "creator_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    creator_id: str
    def __init__(self, request_id: _Optional[str] = ..., creator_id: _Optional[str] = ...) -> None: ...

class RotateOverlayTokenResponse(_message.Message):
    __slots__ = ("overlay_token", "rotate_time")
    OVERLAY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROTATE_TIME_FIELD_NUMBER: _ClassVar[int]
    overlay_token: str
    rotate_time: _timestamp_pb2.Timestamp
    def __init__(self, overlay_token: _Optional[str] = ..., rotate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResolveOverlayTokenRequest(_message.Message):
    __slots__ = ("overlay_token",)
    OVERLAY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    overlay_token: str
    def __init__(self, overlay_token: _Optional[str] = ...) -> None: ...

class ResolveOverlayTokenResponse(_message.Message):
    __slots__ = ("creator_id",)
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    def __init__(self, creator_id: _Optional[str] = ...) -> None: ...
