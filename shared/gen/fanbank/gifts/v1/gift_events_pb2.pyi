import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GiftEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GIFT_EVENT_TYPE_UNSPECIFIED: _ClassVar[GiftEventType]
    GIFT_EVENT_TYPE_TIP: _ClassVar[GiftEventType]
    GIFT_EVENT_TYPE_GIFT: _ClassVar[GiftEventType]
    GIFT_EVENT_TYPE_LIKE_TIP: _ClassVar[GiftEventType]
    GIFT_EVENT_TYPE_GOAL_PROGRESS: _ClassVar[GiftEventType]
    GIFT_EVENT_TYPE_GOAL_REACHED: _ClassVar[GiftEventType]
    GIFT_EVENT_TYPE_MESSAGE_HIDDEN: _ClassVar[GiftEventType]
GIFT_EVENT_TYPE_UNSPECIFIED: GiftEventType
GIFT_EVENT_TYPE_TIP: GiftEventType
GIFT_EVENT_TYPE_GIFT: GiftEventType
GIFT_EVENT_TYPE_LIKE_TIP: GiftEventType
GIFT_EVENT_TYPE_GOAL_PROGRESS: GiftEventType
GIFT_EVENT_TYPE_GOAL_REACHED: GiftEventType
GIFT_EVENT_TYPE_MESSAGE_HIDDEN: GiftEventType

class GiftEvent(_message.Message):
    __slots__ = ("type", "support_id", "creator_id", "sender_id", "sender_display_name", "amount_tokens", "message", "context_type", "context_id", "gift_id", "gift_name", "quantity", "image_url", "animation_url", "goal_id", "goal_progress_tokens", "goal_target_tokens", "event_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_ID_FIELD_NUMBER: _ClassVar[int]
    GIFT_NAME_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    ANIMATION_URL_FIELD_NUMBER: _ClassVar[int]
    GOAL_ID_FIELD_NUMBER: _ClassVar[int]
    GOAL_PROGRESS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GOAL_TARGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    type: GiftEventType
    support_id: str
    creator_id: str
    sender_id: str
    sender_display_name: str
    amount_tokens: int
    message: str
    context_type: str
    context_id: str
    gift_id: str
    gift_name: str
    quantity: int
    image_url: str
    animation_url: str
    goal_id: str
    goal_progress_tokens: int
    goal_target_tokens: int
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[_Union[GiftEventType, str]] = ..., support_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., sender_display_name: _Optional[str] = ..., amount_tokens: _Optional[int] = ..., message: _Optional[str] = ..., context_type: _Optional[str] = ..., context_id: _Optional[str] = ..., gift_id: _Optional[str] = ..., gift_name: _Optional[str] = ..., quantity: _Optional[int] = ..., image_url: _Optional[str] = ..., animation_url: _Optional[str] = ..., goal_id: _Optional[str] = ..., goal_progress_tokens: _Optional[int] = ..., goal_target_tokens: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
