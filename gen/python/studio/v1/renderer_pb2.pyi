from studio.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRendererStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRendererStatusResponse(_message.Message):
    __slots__ = ("status", "triton_url", "triton_ready", "workers")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRITON_URL_FIELD_NUMBER: _ClassVar[int]
    TRITON_READY_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.WorkerStatus
    triton_url: str
    triton_ready: bool
    workers: _containers.RepeatedCompositeFieldContainer[_common_pb2.WorkerStatus]
    def __init__(self, status: _Optional[_Union[_common_pb2.WorkerStatus, _Mapping]] = ..., triton_url: _Optional[str] = ..., triton_ready: _Optional[bool] = ..., workers: _Optional[_Iterable[_Union[_common_pb2.WorkerStatus, _Mapping]]] = ...) -> None: ...
