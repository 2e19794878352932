import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from studio.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainJob(_message.Message):
    __slots__ = ("job_id", "order_id", "tenant_id", "subject_id", "base_model_id", "crop_keys", "steps", "seed", "lora_key", "render", "tier")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CROP_KEYS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LORA_KEY_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    order_id: str
    tenant_id: str
    subject_id: str
    base_model_id: str
    crop_keys: _containers.RepeatedScalarFieldContainer[str]
    steps: int
    seed: int
    lora_key: str
    render: RenderJob
    tier: _common_pb2.PriorityTier
    def __init__(self, job_id: _Optional[str] = ..., order_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., crop_keys: _Optional[_Iterable[str]] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., lora_key: _Optional[str] = ..., render: _Optional[_Union[RenderJob, _Mapping]] = ..., tier: _Optional[_Union[_common_pb2.PriorityTier, str]] = ...) -> None: ...

class RenderItem(_message.Message):
    __slots__ = ("portrait_id", "style", "prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height", "portrait_key", "scheduler")
    PORTRAIT_ID_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_KEY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    portrait_id: str
    style: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    portrait_key: str
    scheduler: str
    def __init__(self, portrait_id: _Optional[str] = ..., style: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., portrait_key: _Optional[str] = ..., scheduler: _Optional[str] = ...) -> None: ...

class RenderJob(_message.Message):
    __slots__ = ("job_id", "order_id", "tenant_id", "subject_id", "lora_key", "items", "visible_label", "tier", "crop_keys")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LORA_KEY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_LABEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    CROP_KEYS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    order_id: str
    tenant_id: str
    subject_id: str
    lora_key: str
    items: _containers.RepeatedCompositeFieldContainer[RenderItem]
    visible_label: _common_pb2.VisibleLabel
    tier: _common_pb2.PriorityTier
    crop_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., order_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., lora_key: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RenderItem, _Mapping]]] = ..., visible_label: _Optional[_Union[_common_pb2.VisibleLabel, _Mapping]] = ..., tier: _Optional[_Union[_common_pb2.PriorityTier, str]] = ..., crop_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class OrderQueued(_message.Message):
    __slots__ = ("position", "eta_seconds", "stage", "starts_in_seconds", "workers", "service_seconds", "expected_start_at", "expected_done_at")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STARTS_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_START_AT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DONE_AT_FIELD_NUMBER: _ClassVar[int]
    position: int
    eta_seconds: int
    stage: str
    starts_in_seconds: int
    workers: int
    service_seconds: float
    expected_start_at: _timestamp_pb2.Timestamp
    expected_done_at: _timestamp_pb2.Timestamp
    def __init__(self, position: _Optional[int] = ..., eta_seconds: _Optional[int] = ..., stage: _Optional[str] = ..., starts_in_seconds: _Optional[int] = ..., workers: _Optional[int] = ..., service_seconds: _Optional[float] = ..., expected_start_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_done_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrainingProgress(_message.Message):
    __slots__ = ("step", "total_steps", "loss", "eta_seconds", "validation", "best_step", "resumed_from_step")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    BEST_STEP_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    loss: float
    eta_seconds: int
    validation: _containers.RepeatedCompositeFieldContainer[ValidationPoint]
    best_step: int
    resumed_from_step: int
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., eta_seconds: _Optional[int] = ..., validation: _Optional[_Iterable[_Union[ValidationPoint, _Mapping]]] = ..., best_step: _Optional[int] = ..., resumed_from_step: _Optional[int] = ...) -> None: ...

class ValidationPoint(_message.Message):
    __slots__ = ("step", "identity_score", "loss")
    STEP_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    step: int
    identity_score: float
    loss: float
    def __init__(self, step: _Optional[int] = ..., identity_score: _Optional[float] = ..., loss: _Optional[float] = ...) -> None: ...

class TrainingDone(_message.Message):
    __slots__ = ("base_model_id", "seconds", "final_loss", "lora_key", "best_step", "best_identity_score", "validation")
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    LORA_KEY_FIELD_NUMBER: _ClassVar[int]
    BEST_STEP_FIELD_NUMBER: _ClassVar[int]
    BEST_IDENTITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    base_model_id: str
    seconds: float
    final_loss: float
    lora_key: str
    best_step: int
    best_identity_score: float
    validation: _containers.RepeatedCompositeFieldContainer[ValidationPoint]
    def __init__(self, base_model_id: _Optional[str] = ..., seconds: _Optional[float] = ..., final_loss: _Optional[float] = ..., lora_key: _Optional[str] = ..., best_step: _Optional[int] = ..., best_identity_score: _Optional[float] = ..., validation: _Optional[_Iterable[_Union[ValidationPoint, _Mapping]]] = ...) -> None: ...

class RenderingProgress(_message.Message):
    __slots__ = ("rendered", "total", "portrait")
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_FIELD_NUMBER: _ClassVar[int]
    rendered: int
    total: int
    portrait: _common_pb2.Portrait
    def __init__(self, rendered: _Optional[int] = ..., total: _Optional[int] = ..., portrait: _Optional[_Union[_common_pb2.Portrait, _Mapping]] = ...) -> None: ...

class OrderDone(_message.Message):
    __slots__ = ("portraits",)
    PORTRAITS_FIELD_NUMBER: _ClassVar[int]
    portraits: _containers.RepeatedCompositeFieldContainer[_common_pb2.Portrait]
    def __init__(self, portraits: _Optional[_Iterable[_Union[_common_pb2.Portrait, _Mapping]]] = ...) -> None: ...

class OrderFailed(_message.Message):
    __slots__ = ("stage", "reason")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stage: str
    reason: str
    def __init__(self, stage: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OrderEvent(_message.Message):
    __slots__ = ("order_id", "tenant_id", "subject_id", "at", "queued", "training", "trained", "rendering", "done", "failed")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    RENDERING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    tenant_id: str
    subject_id: str
    at: _timestamp_pb2.Timestamp
    queued: OrderQueued
    training: TrainingProgress
    trained: TrainingDone
    rendering: RenderingProgress
    done: OrderDone
    failed: OrderFailed
    def __init__(self, order_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queued: _Optional[_Union[OrderQueued, _Mapping]] = ..., training: _Optional[_Union[TrainingProgress, _Mapping]] = ..., trained: _Optional[_Union[TrainingDone, _Mapping]] = ..., rendering: _Optional[_Union[RenderingProgress, _Mapping]] = ..., done: _Optional[_Union[OrderDone, _Mapping]] = ..., failed: _Optional[_Union[OrderFailed, _Mapping]] = ...) -> None: ...

class DeletionRequested(_message.Message):
    __slots__ = ("deletion_id", "tenant_id", "subject_id", "requested_at")
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    deletion_id: str
    tenant_id: str
    subject_id: str
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, deletion_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeletionConfirmed(_message.Message):
    __slots__ = ("deletion_id", "service", "destroyed", "confirmed_at")
    class DestroyedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    deletion_id: str
    service: str
    destroyed: _containers.ScalarMap[str, int]
    confirmed_at: _timestamp_pb2.Timestamp
    def __init__(self, deletion_id: _Optional[str] = ..., service: _Optional[str] = ..., destroyed: _Optional[_Mapping[str, int]] = ..., confirmed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkerHeartbeat(_message.Message):
    __slots__ = ("worker_id", "queue", "busy", "job_id", "job_seconds", "completed_job_id", "expires_in_seconds")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queue: str
    busy: bool
    job_id: str
    job_seconds: float
    completed_job_id: str
    expires_in_seconds: float
    def __init__(self, worker_id: _Optional[str] = ..., queue: _Optional[str] = ..., busy: _Optional[bool] = ..., job_id: _Optional[str] = ..., job_seconds: _Optional[float] = ..., completed_job_id: _Optional[str] = ..., expires_in_seconds: _Optional[float] = ...) -> None: ...

class RenderRecord(_message.Message):
    __slots__ = ("portrait_id", "style", "prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height", "scheduler", "adapter_id", "lora_key", "identity_score")
    PORTRAIT_ID_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    LORA_KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    portrait_id: str
    style: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str
    adapter_id: str
    lora_key: str
    identity_score: float
    def __init__(self, portrait_id: _Optional[str] = ..., style: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., scheduler: _Optional[str] = ..., adapter_id: _Optional[str] = ..., lora_key: _Optional[str] = ..., identity_score: _Optional[float] = ...) -> None: ...

class RenderRecords(_message.Message):
    __slots__ = ("order_id", "records")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    records: _containers.RepeatedCompositeFieldContainer[RenderRecord]
    def __init__(self, order_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[RenderRecord, _Mapping]]] = ...) -> None: ...
