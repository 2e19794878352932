from studio.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTrainerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTrainerStatusResponse(_message.Message):
    __slots__ = ("status", "base_model_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.WorkerStatus
    base_model_id: str
    def __init__(self, status: _Optional[_Union[_common_pb2.WorkerStatus, _Mapping]] = ..., base_model_id: _Optional[str] = ...) -> None: ...
