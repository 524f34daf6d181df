import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Asset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSET_UNSPECIFIED: _ClassVar[Asset]
    ASSET_TOKEN: _ClassVar[Asset]
    ASSET_USD: _ClassVar[Asset]
    ASSET_INR: _ClassVar[Asset]

class AccountCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_CODE_UNSPECIFIED: _ClassVar[AccountCode]
    ACCOUNT_CODE_USER_WALLET: _ClassVar[AccountCode]
    ACCOUNT_CODE_USER_PURCHASED: _ClassVar[AccountCode]
    ACCOUNT_CODE_USER_PROMOTIONAL: _ClassVar[AccountCode]
    ACCOUNT_CODE_CREATOR_EARNINGS: _ClassVar[AccountCode]
    ACCOUNT_CODE_PLATFORM_REVENUE: _ClassVar[AccountCode]
    ACCOUNT_CODE_ISSUANCE: _ClassVar[AccountCode]
    ACCOUNT_CODE_PROMOTIONS: _ClassVar[AccountCode]
    ACCOUNT_CODE_PAYOUT_CLEARING: _ClassVar[AccountCode]
    ACCOUNT_CODE_PROVIDER_CLEARING: _ClassVar[AccountCode]
    ACCOUNT_CODE_SUBSCRIPTION_POOL: _ClassVar[AccountCode]

class TransferCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_CODE_UNSPECIFIED: _ClassVar[TransferCode]
    TRANSFER_CODE_TIP: _ClassVar[TransferCode]
    TRANSFER_CODE_GIFT: _ClassVar[TransferCode]
    TRANSFER_CODE_TICKET: _ClassVar[TransferCode]
    TRANSFER_CODE_CALL_BLOCK: _ClassVar[TransferCode]
    TRANSFER_CODE_LIKE: _ClassVar[TransferCode]
    TRANSFER_CODE_PURCHASE: _ClassVar[TransferCode]
    TRANSFER_CODE_BONUS: _ClassVar[TransferCode]
    TRANSFER_CODE_ADJUSTMENT: _ClassVar[TransferCode]
    TRANSFER_CODE_PAYOUT: _ClassVar[TransferCode]
    TRANSFER_CODE_REFUND: _ClassVar[TransferCode]
    TRANSFER_CODE_CLAWBACK: _ClassVar[TransferCode]
    TRANSFER_CODE_REINSTATEMENT: _ClassVar[TransferCode]
    TRANSFER_CODE_SUBSCRIPTION: _ClassVar[TransferCode]
    TRANSFER_CODE_COPY_EARNING: _ClassVar[TransferCode]
    TRANSFER_CODE_SETTLEMENT: _ClassVar[TransferCode]
    TRANSFER_CODE_REVERSAL: _ClassVar[TransferCode]

class Funding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNDING_UNSPECIFIED: _ClassVar[Funding]
    FUNDING_NONE: _ClassVar[Funding]
    FUNDING_PROMOTIONAL: _ClassVar[Funding]
    FUNDING_PURCHASED: _ClassVar[Funding]

class BatchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_MODE_UNSPECIFIED: _ClassVar[BatchMode]
    BATCH_MODE_LINKED: _ClassVar[BatchMode]
    BATCH_MODE_INDEPENDENT: _ClassVar[BatchMode]

class HoldStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_STATUS_UNSPECIFIED: _ClassVar[HoldStatus]
    HOLD_STATUS_OPEN: _ClassVar[HoldStatus]
    HOLD_STATUS_CAPTURED: _ClassVar[HoldStatus]
    HOLD_STATUS_VOIDED: _ClassVar[HoldStatus]
    HOLD_STATUS_EXPIRED: _ClassVar[HoldStatus]
ASSET_UNSPECIFIED: Asset
ASSET_TOKEN: Asset
ASSET_USD: Asset
ASSET_INR: Asset
ACCOUNT_CODE_UNSPECIFIED: AccountCode
ACCOUNT_CODE_USER_WALLET: AccountCode
ACCOUNT_CODE_USER_PURCHASED: AccountCode
ACCOUNT_CODE_USER_PROMOTIONAL: AccountCode
ACCOUNT_CODE_CREATOR_EARNINGS: AccountCode
ACCOUNT_CODE_PLATFORM_REVENUE: AccountCode
ACCOUNT_CODE_ISSUANCE: AccountCode
ACCOUNT_CODE_PROMOTIONS: AccountCode
ACCOUNT_CODE_PAYOUT_CLEARING: AccountCode
ACCOUNT_CODE_PROVIDER_CLEARING: AccountCode
ACCOUNT_CODE_SUBSCRIPTION_POOL: AccountCode
TRANSFER_CODE_UNSPECIFIED: TransferCode
TRANSFER_CODE_TIP: TransferCode
TRANSFER_CODE_GIFT: TransferCode
TRANSFER_CODE_TICKET: TransferCode
TRANSFER_CODE_CALL_BLOCK: TransferCode
TRANSFER_CODE_LIKE: TransferCode
TRANSFER_CODE_PURCHASE: TransferCode
TRANSFER_CODE_BONUS: TransferCode
TRANSFER_CODE_ADJUSTMENT: TransferCode
TRANSFER_CODE_PAYOUT: TransferCode
TRANSFER_CODE_REFUND: TransferCode
TRANSFER_CODE_CLAWBACK: TransferCode
TRANSFER_CODE_REINSTATEMENT: TransferCode
TRANSFER_CODE_SUBSCRIPTION: TransferCode
TRANSFER_CODE_COPY_EARNING: TransferCode
TRANSFER_CODE_SETTLEMENT: TransferCode
TRANSFER_CODE_REVERSAL: TransferCode
FUNDING_UNSPECIFIED: Funding
FUNDING_NONE: Funding
FUNDING_PROMOTIONAL: Funding
FUNDING_PURCHASED: Funding
BATCH_MODE_UNSPECIFIED: BatchMode
BATCH_MODE_LINKED: BatchMode
BATCH_MODE_INDEPENDENT: BatchMode
HOLD_STATUS_UNSPECIFIED: HoldStatus
HOLD_STATUS_OPEN: HoldStatus
HOLD_STATUS_CAPTURED: HoldStatus
HOLD_STATUS_VOIDED: HoldStatus
HOLD_STATUS_EXPIRED: HoldStatus

class AccountRef(_message.Message):
    __slots__ = ("owner_id", "code", "asset")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    code: AccountCode
    asset: Asset
    def __init__(self, owner_id: _Optional[str] = ..., code: _Optional[_Union[AccountCode, str]] = ..., asset: _Optional[_Union[Asset, str]] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("ref", "posted", "pending", "available", "must_not_go_negative", "create_time")
    REF_FIELD_NUMBER: _ClassVar[int]
    POSTED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_GO_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ref: AccountRef
    posted: int
    pending: int
    available: int
    must_not_go_negative: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, ref: _Optional[_Union[AccountRef, _Mapping]] = ..., posted: _Optional[int] = ..., pending: _Optional[int] = ..., available: _Optional[int] = ..., must_not_go_negative: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TransferSpec(_message.Message):
    __slots__ = ("transfer_id", "debit", "credit", "amount", "code", "context_type", "context_id", "counterparty_id", "fee_bps", "group_id")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_ID_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    debit: AccountRef
    credit: AccountRef
    amount: int
    code: TransferCode
    context_type: str
    context_id: str
    counterparty_id: str
    fee_bps: int
    group_id: str
    def __init__(self, transfer_id: _Optional[str] = ..., debit: _Optional[_Union[AccountRef, _Mapping]] = ..., credit: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., code: _Optional[_Union[TransferCode, str]] = ..., context_type: _Optional[str] = ..., context_id: _Optional[str] = ..., counterparty_id: _Optional[str] = ..., fee_bps: _Optional[int] = ..., group_id: _Optional[str] = ...) -> None: ...

class Posting(_message.Message):
    __slots__ = ("debit", "credit", "amount", "funding")
    DEBIT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    FUNDING_FIELD_NUMBER: _ClassVar[int]
    debit: AccountRef
    credit: AccountRef
    amount: int
    funding: Funding
    def __init__(self, debit: _Optional[_Union[AccountRef, _Mapping]] = ..., credit: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., funding: _Optional[_Union[Funding, str]] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("transfer_id", "debit", "credit", "amount", "code", "context_type", "context_id", "counterparty_id", "fee_bps", "postings", "reversed_amount", "create_time", "debit_available_after")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_ID_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    REVERSED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEBIT_AVAILABLE_AFTER_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    debit: AccountRef
    credit: AccountRef
    amount: int
    code: TransferCode
    context_type: str
    context_id: str
    counterparty_id: str
    fee_bps: int
    postings: _containers.RepeatedCompositeFieldContainer[Posting]
    reversed_amount: int
    create_time: _timestamp_pb2.Timestamp
    debit_available_after: int
    def __init__(self, transfer_id: _Optional[str] = ..., debit: _Optional[_Union[AccountRef, _Mapping]] = ..., credit: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., code: _Optional[_Union[TransferCode, str]] = ..., context_type: _Optional[str] = ..., context_id: _Optional[str] = ..., counterparty_id: _Optional[str] = ..., fee_bps: _Optional[int] = ..., postings: _Optional[_Iterable[_Union[Posting, _Mapping]]] = ..., reversed_amount: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., debit_available_after: _Optional[int] = ...) -> None: ...

class CreateAccountRequest(_message.Message):
    __slots__ = ("request_id", "account")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account: AccountRef
    def __init__(self, request_id: _Optional[str] = ..., account: _Optional[_Union[AccountRef, _Mapping]] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: AccountRef
    def __init__(self, account: _Optional[_Union[AccountRef, _Mapping]] = ...) -> None: ...

class GetAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: TransferSpec
    def __init__(self, transfer: _Optional[_Union[TransferSpec, _Mapping]] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: Transfer
    def __init__(self, transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...

class BatchTransferRequest(_message.Message):
    __slots__ = ("batch_id", "mode", "transfers")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    mode: BatchMode
    transfers: _containers.RepeatedCompositeFieldContainer[TransferSpec]
    def __init__(self, batch_id: _Optional[str] = ..., mode: _Optional[_Union[BatchMode, str]] = ..., transfers: _Optional[_Iterable[_Union[TransferSpec, _Mapping]]] = ...) -> None: ...

class BatchTransferResult(_message.Message):
    __slots__ = ("transfer_id", "transfer", "error")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    transfer: Transfer
    error: _status_pb2.Status
    def __init__(self, transfer_id: _Optional[str] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class BatchTransferResponse(_message.Message):
    __slots__ = ("batch_id", "results")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    results: _containers.RepeatedCompositeFieldContainer[BatchTransferResult]
    def __init__(self, batch_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[BatchTransferResult, _Mapping]]] = ...) -> None: ...

class LegAmount(_message.Message):
    __slots__ = ("leg", "amount")
    LEG_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    leg: int
    amount: int
    def __init__(self, leg: _Optional[int] = ..., amount: _Optional[int] = ...) -> None: ...

class ReverseTransferRequest(_message.Message):
    __slots__ = ("reversal_id", "transfer_id", "batch_id", "code", "legs")
    REVERSAL_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    reversal_id: str
    transfer_id: str
    batch_id: str
    code: TransferCode
    legs: _containers.RepeatedCompositeFieldContainer[LegAmount]
    def __init__(self, reversal_id: _Optional[str] = ..., transfer_id: _Optional[str] = ..., batch_id: _Optional[str] = ..., code: _Optional[_Union[TransferCode, str]] = ..., legs: _Optional[_Iterable[_Union[LegAmount, _Mapping]]] = ...) -> None: ...

class ReverseTransferResponse(_message.Message):
    __slots__ = ("reversal_id", "transfers")
    REVERSAL_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    reversal_id: str
    transfers: _containers.RepeatedCompositeFieldContainer[Transfer]
    def __init__(self, reversal_id: _Optional[str] = ..., transfers: _Optional[_Iterable[_Union[Transfer, _Mapping]]] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("hold_id", "account", "destination", "amount", "captured_amount", "status", "code", "context_type", "context_id", "expire_time", "create_time", "resolve_time")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_TIME_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    account: AccountRef
    destination: AccountRef
    amount: int
    captured_amount: int
    status: HoldStatus
    code: TransferCode
    context_type: str
    context_id: str
    expire_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    resolve_time: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., account: _Optional[_Union[AccountRef, _Mapping]] = ..., destination: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., captured_amount: _Optional[int] = ..., status: _Optional[_Union[HoldStatus, str]] = ..., code: _Optional[_Union[TransferCode, str]] = ..., context_type: _Optional[str] = ..., context_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolve_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateHoldRequest(_message.Message):
    __slots__ = ("hold_id", "account", "destination", "amount", "code", "context_type", "context_id", "ttl_seconds")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    account: AccountRef
    destination: AccountRef
    amount: int
    code: TransferCode
    context_type: str
    context_id: str
    ttl_seconds: int
    def __init__(self, hold_id: _Optional[str] = ..., account: _Optional[_Union[AccountRef, _Mapping]] = ..., destination: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., code: _Optional[_Union[TransferCode, str]] = ..., context_type: _Optional[str] = ..., context_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ...) -> None: ...

class CaptureHoldRequest(_message.Message):
    __slots__ = ("request_id", "hold_id", "amount")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    hold_id: str
    amount: int
    def __init__(self, request_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount: _Optional[int] = ...) -> None: ...

class CaptureHoldResponse(_message.Message):
    __slots__ = ("hold", "transfer")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    transfer: Transfer
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...

class VoidHoldRequest(_message.Message):
    __slots__ = ("request_id", "hold_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    hold_id: str
    def __init__(self, request_id: _Optional[str] = ..., hold_id: _Optional[str] = ...) -> None: ...

class VoidHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ...) -> None: ...

class GetHoldRequest(_message.Message):
    __slots__ = ("hold_id",)
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    def __init__(self, hold_id: _Optional[str] = ...) -> None: ...

class GetHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ...) -> None: ...

class ExpireHoldsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ExpireHoldsResponse(_message.Message):
    __slots__ = ("expired_count",)
    EXPIRED_COUNT_FIELD_NUMBER: _ClassVar[int]
    expired_count: int
    def __init__(self, expired_count: _Optional[int] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("owner_id", "asset")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    asset: Asset
    def __init__(self, owner_id: _Optional[str] = ..., asset: _Optional[_Union[Asset, str]] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("owner_id", "asset", "spendable_posted", "spendable_available", "accounts")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    SPENDABLE_POSTED_FIELD_NUMBER: _ClassVar[int]
    SPENDABLE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    asset: Asset
    spendable_posted: int
    spendable_available: int
    accounts: _containers.RepeatedCompositeFieldContainer[Account]
    def __init__(self, owner_id: _Optional[str] = ..., asset: _Optional[_Union[Asset, str]] = ..., spendable_posted: _Optional[int] = ..., spendable_available: _Optional[int] = ..., accounts: _Optional[_Iterable[_Union[Account, _Mapping]]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("entry_id", "account", "amount", "balance_after", "transfer_id", "code", "context_type", "context_id", "counterparty_id", "funding", "create_time")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_ID_FIELD_NUMBER: _ClassVar[int]
    FUNDING_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    account: AccountRef
    amount: int
    balance_after: int
    transfer_id: str
    code: TransferCode
    context_type: str
    context_id: str
    counterparty_id: str
    funding: Funding
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, entry_id: _Optional[int] = ..., account: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., balance_after: _Optional[int] = ..., transfer_id: _Optional[str] = ..., code: _Optional[_Union[TransferCode, str]] = ..., context_type: _Optional[str] = ..., context_id: _Optional[str] = ..., counterparty_id: _Optional[str] = ..., funding: _Optional[_Union[Funding, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("owner_id", "asset", "code", "page_size", "page_token")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    asset: Asset
    code: AccountCode
    page_size: int
    page_token: str
    def __init__(self, owner_id: _Optional[str] = ..., asset: _Optional[_Union[Asset, str]] = ..., code: _Optional[_Union[AccountCode, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchBalanceRequest(_message.Message):
    __slots__ = ("owner_id", "asset")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    asset: Asset
    def __init__(self, owner_id: _Optional[str] = ..., asset: _Optional[_Union[Asset, str]] = ...) -> None: ...

class WatchBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: GetBalanceResponse
    def __init__(self, balance: _Optional[_Union[GetBalanceResponse, _Mapping]] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AssetTotals(_message.Message):
    __slots__ = ("asset", "posted_sum", "pending_sum", "open_holds_sum", "account_count", "transfer_count", "entry_count", "debt_sum")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    POSTED_SUM_FIELD_NUMBER: _ClassVar[int]
    PENDING_SUM_FIELD_NUMBER: _ClassVar[int]
    OPEN_HOLDS_SUM_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEBT_SUM_FIELD_NUMBER: _ClassVar[int]
    asset: Asset
    posted_sum: int
    pending_sum: int
    open_holds_sum: int
    account_count: int
    transfer_count: int
    entry_count: int
    debt_sum: int
    def __init__(self, asset: _Optional[_Union[Asset, str]] = ..., posted_sum: _Optional[int] = ..., pending_sum: _Optional[int] = ..., open_holds_sum: _Optional[int] = ..., account_count: _Optional[int] = ..., transfer_count: _Optional[int] = ..., entry_count: _Optional[int] = ..., debt_sum: _Optional[int] = ...) -> None: ...

class Violation(_message.Message):
    __slots__ = ("kind", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Debt(_message.Message):
    __slots__ = ("account", "amount")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    account: AccountRef
    amount: int
    def __init__(self, account: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ...) -> None: ...

class AuditResponse(_message.Message):
    __slots__ = ("ok", "totals", "violations", "debts", "audit_time")
    OK_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    DEBTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_TIME_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    totals: _containers.RepeatedCompositeFieldContainer[AssetTotals]
    violations: _containers.RepeatedCompositeFieldContainer[Violation]
    debts: _containers.RepeatedCompositeFieldContainer[Debt]
    audit_time: _timestamp_pb2.Timestamp
    def __init__(self, ok: _Optional[bool] = ..., totals: _Optional[_Iterable[_Union[AssetTotals, _Mapping]]] = ..., violations: _Optional[_Iterable[_Union[Violation, _Mapping]]] = ..., debts: _Optional[_Iterable[_Union[Debt, _Mapping]]] = ..., audit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AdjustBalanceRequest(_message.Message):
    __slots__ = ("request_id", "account", "amount", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account: AccountRef
    amount: int
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., account: _Optional[_Union[AccountRef, _Mapping]] = ..., amount: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AdjustBalanceResponse(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: Transfer
    def __init__(self, transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...

class GrantPromotionRequest(_message.Message):
    __slots__ = ("request_id", "owner_id", "amount", "campaign_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    owner_id: str
    amount: int
    campaign_id: str
    def __init__(self, request_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., amount: _Optional[int] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class GrantPromotionResponse(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: Transfer
    def __init__(self, transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...
