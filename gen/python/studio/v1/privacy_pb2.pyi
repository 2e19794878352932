import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from studio.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_PURPOSE_UNSPECIFIED: _ClassVar[KeyPurpose]
    KEY_PURPOSE_ENCRYPT_UPLOAD: _ClassVar[KeyPurpose]
    KEY_PURPOSE_DECRYPT_PHOTO: _ClassVar[KeyPurpose]
    KEY_PURPOSE_ENCRYPT_CROP: _ClassVar[KeyPurpose]
    KEY_PURPOSE_DECRYPT_CROP: _ClassVar[KeyPurpose]
    KEY_PURPOSE_ENCRYPT_LORA: _ClassVar[KeyPurpose]
    KEY_PURPOSE_DECRYPT_LORA: _ClassVar[KeyPurpose]
    KEY_PURPOSE_ENCRYPT_PORTRAIT: _ClassVar[KeyPurpose]
    KEY_PURPOSE_DECRYPT_PORTRAIT: _ClassVar[KeyPurpose]
    KEY_PURPOSE_TRAINER_CHECKPOINT: _ClassVar[KeyPurpose]
    KEY_PURPOSE_EXPORT_SUBJECT: _ClassVar[KeyPurpose]

class DeletionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELETION_REASON_UNSPECIFIED: _ClassVar[DeletionReason]
    DELETION_REASON_REQUESTED: _ClassVar[DeletionReason]
    DELETION_REASON_CONSENT_REVOKED: _ClassVar[DeletionReason]
    DELETION_REASON_RETENTION_EXPIRED: _ClassVar[DeletionReason]

class DeletionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELETION_STATE_UNSPECIFIED: _ClassVar[DeletionState]
    DELETION_STATE_PURGING: _ClassVar[DeletionState]
    DELETION_STATE_CERTIFIED: _ClassVar[DeletionState]
KEY_PURPOSE_UNSPECIFIED: KeyPurpose
KEY_PURPOSE_ENCRYPT_UPLOAD: KeyPurpose
KEY_PURPOSE_DECRYPT_PHOTO: KeyPurpose
KEY_PURPOSE_ENCRYPT_CROP: KeyPurpose
KEY_PURPOSE_DECRYPT_CROP: KeyPurpose
KEY_PURPOSE_ENCRYPT_LORA: KeyPurpose
KEY_PURPOSE_DECRYPT_LORA: KeyPurpose
KEY_PURPOSE_ENCRYPT_PORTRAIT: KeyPurpose
KEY_PURPOSE_DECRYPT_PORTRAIT: KeyPurpose
KEY_PURPOSE_TRAINER_CHECKPOINT: KeyPurpose
KEY_PURPOSE_EXPORT_SUBJECT: KeyPurpose
DELETION_REASON_UNSPECIFIED: DeletionReason
DELETION_REASON_REQUESTED: DeletionReason
DELETION_REASON_CONSENT_REVOKED: DeletionReason
DELETION_REASON_RETENTION_EXPIRED: DeletionReason
DELETION_STATE_UNSPECIFIED: DeletionState
DELETION_STATE_PURGING: DeletionState
DELETION_STATE_CERTIFIED: DeletionState

class RegisterSubjectRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "consent")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    consent: _common_pb2.ConsentRecord
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.ConsentRecord, _Mapping]] = ...) -> None: ...

class RegisterSubjectResponse(_message.Message):
    __slots__ = ("key_id", "key_version")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    key_version: int
    def __init__(self, key_id: _Optional[str] = ..., key_version: _Optional[int] = ...) -> None: ...

class GetDataKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "purpose")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    purpose: KeyPurpose
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., purpose: _Optional[_Union[KeyPurpose, str]] = ...) -> None: ...

class GetDataKeyResponse(_message.Message):
    __slots__ = ("data_key", "key_id", "key_version")
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    data_key: bytes
    key_id: str
    key_version: int
    def __init__(self, data_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., key_version: _Optional[int] = ...) -> None: ...

class GetConsentRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class GetConsentResponse(_message.Message):
    __slots__ = ("consent",)
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    consent: _common_pb2.ConsentRecord
    def __init__(self, consent: _Optional[_Union[_common_pb2.ConsentRecord, _Mapping]] = ...) -> None: ...

class ShredSubjectRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    reason: DeletionReason
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., reason: _Optional[_Union[DeletionReason, str]] = ...) -> None: ...

class RecordRevocationRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class PurgeConfirmation(_message.Message):
    __slots__ = ("service", "confirmed_at", "destroyed")
    class DestroyedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    service: str
    confirmed_at: _timestamp_pb2.Timestamp
    destroyed: _containers.ScalarMap[str, int]
    def __init__(self, service: _Optional[str] = ..., confirmed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., destroyed: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Deletion(_message.Message):
    __slots__ = ("deletion_id", "tenant_id", "subject_id", "reason", "state", "requested_at", "key_shredded_at", "confirmations", "waiting_for", "certified_at", "certificate")
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_SHREDDED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    CERTIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    deletion_id: str
    tenant_id: str
    subject_id: str
    reason: DeletionReason
    state: DeletionState
    requested_at: _timestamp_pb2.Timestamp
    key_shredded_at: _timestamp_pb2.Timestamp
    confirmations: _containers.RepeatedCompositeFieldContainer[PurgeConfirmation]
    waiting_for: _containers.RepeatedScalarFieldContainer[str]
    certified_at: _timestamp_pb2.Timestamp
    certificate: bytes
    def __init__(self, deletion_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., reason: _Optional[_Union[DeletionReason, str]] = ..., state: _Optional[_Union[DeletionState, str]] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_shredded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., confirmations: _Optional[_Iterable[_Union[PurgeConfirmation, _Mapping]]] = ..., waiting_for: _Optional[_Iterable[str]] = ..., certified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class ShredSubjectResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: Deletion
    def __init__(self, deletion: _Optional[_Union[Deletion, _Mapping]] = ...) -> None: ...

class RecordRevocationResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: Deletion
    def __init__(self, deletion: _Optional[_Union[Deletion, _Mapping]] = ...) -> None: ...

class GetDeletionStatusRequest(_message.Message):
    __slots__ = ("tenant_id", "deletion_id", "subject_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    deletion_id: str
    subject_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., deletion_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class GetDeletionStatusResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: Deletion
    def __init__(self, deletion: _Optional[_Union[Deletion, _Mapping]] = ...) -> None: ...

class RotateKekRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateKekResponse(_message.Message):
    __slots__ = ("new_version", "keys_rewrapped", "retired_versions")
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEYS_REWRAPPED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    new_version: int
    keys_rewrapped: int
    retired_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, new_version: _Optional[int] = ..., keys_rewrapped: _Optional[int] = ..., retired_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class ExportAuditRequest(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: int
    def __init__(self, batch: _Optional[int] = ...) -> None: ...

class ExportAuditResponse(_message.Message):
    __slots__ = ("json", "records")
    JSON_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    json: str
    records: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, json: _Optional[str] = ..., records: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSigningKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSigningKeyResponse(_message.Message):
    __slots__ = ("public_key_pem", "key_id")
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    public_key_pem: str
    key_id: str
    def __init__(self, public_key_pem: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class ExportSubjectAuditRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class ExportSubjectAuditResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class PrepareProvenanceRequest(_message.Message):
    __slots__ = ("tenant_id", "order_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    order_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class PrepareProvenanceResponse(_message.Message):
    __slots__ = ("certificate_chain_pem", "algorithm", "order_reference")
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ORDER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    certificate_chain_pem: str
    algorithm: str
    order_reference: str
    def __init__(self, certificate_chain_pem: _Optional[str] = ..., algorithm: _Optional[str] = ..., order_reference: _Optional[str] = ...) -> None: ...

class SignProvenanceRequest(_message.Message):
    __slots__ = ("tenant_id", "payload")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    payload: bytes
    def __init__(self, tenant_id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SignProvenanceResponse(_message.Message):
    __slots__ = ("signature",)
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...
