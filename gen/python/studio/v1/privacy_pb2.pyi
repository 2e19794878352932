from studio.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
KEY_PURPOSE_UNSPECIFIED: KeyPurpose
KEY_PURPOSE_ENCRYPT_UPLOAD: KeyPurpose
KEY_PURPOSE_DECRYPT_PHOTO: KeyPurpose
KEY_PURPOSE_ENCRYPT_CROP: KeyPurpose
KEY_PURPOSE_DECRYPT_CROP: KeyPurpose
KEY_PURPOSE_ENCRYPT_LORA: KeyPurpose
KEY_PURPOSE_DECRYPT_LORA: KeyPurpose
KEY_PURPOSE_ENCRYPT_PORTRAIT: KeyPurpose
KEY_PURPOSE_DECRYPT_PORTRAIT: KeyPurpose

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
