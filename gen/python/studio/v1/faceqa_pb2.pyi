from studio.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckPhotoRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "photo_id", "object_key", "role", "crop_key", "crop_size")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CROP_KEY_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    photo_id: str
    object_key: str
    role: _common_pb2.PhotoRole
    crop_key: str
    crop_size: int
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., photo_id: _Optional[str] = ..., object_key: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.PhotoRole, str]] = ..., crop_key: _Optional[str] = ..., crop_size: _Optional[int] = ...) -> None: ...

class CheckPhotoResponse(_message.Message):
    __slots__ = ("verdict", "crop_key")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CROP_KEY_FIELD_NUMBER: _ClassVar[int]
    verdict: _common_pb2.PhotoVerdict
    crop_key: str
    def __init__(self, verdict: _Optional[_Union[_common_pb2.PhotoVerdict, _Mapping]] = ..., crop_key: _Optional[str] = ...) -> None: ...
