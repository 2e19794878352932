from studio.v1 import common_pb2 as _common_pb2
from studio.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAIN_JOB_STATE_UNSPECIFIED: _ClassVar[TrainJobState]
    TRAIN_JOB_STATE_RUNNING: _ClassVar[TrainJobState]
    TRAIN_JOB_STATE_DONE: _ClassVar[TrainJobState]
    TRAIN_JOB_STATE_FAILED: _ClassVar[TrainJobState]
    TRAIN_JOB_STATE_CANCELLED: _ClassVar[TrainJobState]
TRAIN_JOB_STATE_UNSPECIFIED: TrainJobState
TRAIN_JOB_STATE_RUNNING: TrainJobState
TRAIN_JOB_STATE_DONE: TrainJobState
TRAIN_JOB_STATE_FAILED: TrainJobState
TRAIN_JOB_STATE_CANCELLED: TrainJobState

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

class TrainJobRecord(_message.Message):
    __slots__ = ("job_id", "state", "checkpoint_key", "checkpoint_step", "worker_id", "attempts", "reason", "tenant_id", "subject_id", "completion")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_KEY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: TrainJobState
    checkpoint_key: str
    checkpoint_step: int
    worker_id: str
    attempts: int
    reason: str
    tenant_id: str
    subject_id: str
    completion: _events_pb2.TrainingDone
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[TrainJobState, str]] = ..., checkpoint_key: _Optional[str] = ..., checkpoint_step: _Optional[int] = ..., worker_id: _Optional[str] = ..., attempts: _Optional[int] = ..., reason: _Optional[str] = ..., tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., completion: _Optional[_Union[_events_pb2.TrainingDone, _Mapping]] = ...) -> None: ...
