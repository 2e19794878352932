import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from studio.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TenantQuotas(_message.Message):
    __slots__ = ("max_concurrent_orders", "max_subjects_per_day", "max_photos_per_subject", "max_upload_bytes_per_day")
    MAX_CONCURRENT_ORDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBJECTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTOS_PER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_orders: int
    max_subjects_per_day: int
    max_photos_per_subject: int
    max_upload_bytes_per_day: int
    def __init__(self, max_concurrent_orders: _Optional[int] = ..., max_subjects_per_day: _Optional[int] = ..., max_photos_per_subject: _Optional[int] = ..., max_upload_bytes_per_day: _Optional[int] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("tenant_id", "name", "disabled", "min_accepted_photos", "default_retention_days", "quotas", "cert_identities", "created_at", "max_photo_age_days", "visible_label")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CERT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTO_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_LABEL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    disabled: bool
    min_accepted_photos: int
    default_retention_days: int
    quotas: TenantQuotas
    cert_identities: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    max_photo_age_days: int
    visible_label: _common_pb2.VisibleLabel
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., disabled: _Optional[bool] = ..., min_accepted_photos: _Optional[int] = ..., default_retention_days: _Optional[int] = ..., quotas: _Optional[_Union[TenantQuotas, _Mapping]] = ..., cert_identities: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_photo_age_days: _Optional[int] = ..., visible_label: _Optional[_Union[_common_pb2.VisibleLabel, _Mapping]] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name", "min_accepted_photos", "default_retention_days", "quotas", "cert_identities", "max_photo_age_days")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CERT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTO_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    min_accepted_photos: int
    default_retention_days: int
    quotas: TenantQuotas
    cert_identities: _containers.RepeatedScalarFieldContainer[str]
    max_photo_age_days: int
    def __init__(self, name: _Optional[str] = ..., min_accepted_photos: _Optional[int] = ..., default_retention_days: _Optional[int] = ..., quotas: _Optional[_Union[TenantQuotas, _Mapping]] = ..., cert_identities: _Optional[_Iterable[str]] = ..., max_photo_age_days: _Optional[int] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("tenant", "api_key")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    api_key: str
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ..., api_key: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class RotateTenantKeyRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class RotateTenantKeyResponse(_message.Message):
    __slots__ = ("tenant", "api_key")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    api_key: str
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ..., api_key: _Optional[str] = ...) -> None: ...

class DisableTenantRequest(_message.Message):
    __slots__ = ("tenant_id", "enable")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    enable: bool
    def __init__(self, tenant_id: _Optional[str] = ..., enable: _Optional[bool] = ...) -> None: ...

class DisableTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class UpdateTenantRequest(_message.Message):
    __slots__ = ("tenant_id", "min_accepted_photos", "default_retention_days", "max_concurrent_orders", "max_subjects_per_day", "max_photos_per_subject", "max_upload_bytes_per_day", "add_cert_identities", "remove_cert_identities", "max_photo_age_days", "visible_label")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_ORDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBJECTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTOS_PER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    ADD_CERT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    REMOVE_CERT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTO_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_LABEL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    min_accepted_photos: int
    default_retention_days: int
    max_concurrent_orders: int
    max_subjects_per_day: int
    max_photos_per_subject: int
    max_upload_bytes_per_day: int
    add_cert_identities: _containers.RepeatedScalarFieldContainer[str]
    remove_cert_identities: _containers.RepeatedScalarFieldContainer[str]
    max_photo_age_days: int
    visible_label: _common_pb2.VisibleLabel
    def __init__(self, tenant_id: _Optional[str] = ..., min_accepted_photos: _Optional[int] = ..., default_retention_days: _Optional[int] = ..., max_concurrent_orders: _Optional[int] = ..., max_subjects_per_day: _Optional[int] = ..., max_photos_per_subject: _Optional[int] = ..., max_upload_bytes_per_day: _Optional[int] = ..., add_cert_identities: _Optional[_Iterable[str]] = ..., remove_cert_identities: _Optional[_Iterable[str]] = ..., max_photo_age_days: _Optional[int] = ..., visible_label: _Optional[_Union[_common_pb2.VisibleLabel, _Mapping]] = ...) -> None: ...

class UpdateTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...
