import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from studio.v1 import admin_pb2 as _admin_pb2
from studio.v1 import common_pb2 as _common_pb2
from studio.v1 import events_pb2 as _events_pb2
from studio.v1 import studio_pb2 as _studio_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TenantRecord(_message.Message):
    __slots__ = ("tenant_id", "name", "api_key_hash", "disabled", "min_accepted_photos", "default_retention_days", "quotas", "cert_identities", "created_at", "visible_label", "max_photo_age_days")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CERT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_LABEL_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTO_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    api_key_hash: str
    disabled: bool
    min_accepted_photos: int
    default_retention_days: int
    quotas: _admin_pb2.TenantQuotas
    cert_identities: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    visible_label: _common_pb2.VisibleLabel
    max_photo_age_days: int
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., api_key_hash: _Optional[str] = ..., disabled: _Optional[bool] = ..., min_accepted_photos: _Optional[int] = ..., default_retention_days: _Optional[int] = ..., quotas: _Optional[_Union[_admin_pb2.TenantQuotas, _Mapping]] = ..., cert_identities: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., visible_label: _Optional[_Union[_common_pb2.VisibleLabel, _Mapping]] = ..., max_photo_age_days: _Optional[int] = ...) -> None: ...

class SubjectRecord(_message.Message):
    __slots__ = ("tenant_id", "subject", "crop_keys", "lora_keys", "order_ids", "idempotency_entries")
    class CropKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LoraKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CROP_KEYS_FIELD_NUMBER: _ClassVar[int]
    LORA_KEYS_FIELD_NUMBER: _ClassVar[int]
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject: _studio_pb2.Subject
    crop_keys: _containers.ScalarMap[str, str]
    lora_keys: _containers.ScalarMap[str, str]
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    idempotency_entries: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., subject: _Optional[_Union[_studio_pb2.Subject, _Mapping]] = ..., crop_keys: _Optional[_Mapping[str, str]] = ..., lora_keys: _Optional[_Mapping[str, str]] = ..., order_ids: _Optional[_Iterable[str]] = ..., idempotency_entries: _Optional[_Iterable[str]] = ...) -> None: ...

class OrderRecord(_message.Message):
    __slots__ = ("tenant_id", "order", "history")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    order: _common_pb2.Order
    history: _containers.RepeatedCompositeFieldContainer[_events_pb2.OrderEvent]
    def __init__(self, tenant_id: _Optional[str] = ..., order: _Optional[_Union[_common_pb2.Order, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_events_pb2.OrderEvent, _Mapping]]] = ...) -> None: ...

class UsageCounter(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: int
    def __init__(self, value: _Optional[int] = ...) -> None: ...

class ActiveOrders(_message.Message):
    __slots__ = ("admitted_ms",)
    class AdmittedMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ADMITTED_MS_FIELD_NUMBER: _ClassVar[int]
    admitted_ms: _containers.ScalarMap[str, int]
    def __init__(self, admitted_ms: _Optional[_Mapping[str, int]] = ...) -> None: ...

class IdempotencyEntry(_message.Message):
    __slots__ = ("resource_id", "request_sha256", "created_ms")
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    resource_id: str
    request_sha256: str
    created_ms: int
    def __init__(self, resource_id: _Optional[str] = ..., request_sha256: _Optional[str] = ..., created_ms: _Optional[int] = ...) -> None: ...

class SchedulerLease(_message.Message):
    __slots__ = ("holder", "expires_at_ms")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    holder: str
    expires_at_ms: int
    def __init__(self, holder: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class ServiceTime(_message.Message):
    __slots__ = ("queue", "mean_seconds", "samples")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MEAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    queue: str
    mean_seconds: float
    samples: int
    def __init__(self, queue: _Optional[str] = ..., mean_seconds: _Optional[float] = ..., samples: _Optional[int] = ...) -> None: ...
