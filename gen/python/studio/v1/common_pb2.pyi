import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PhotoRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHOTO_ROLE_UNSPECIFIED: _ClassVar[PhotoRole]
    PHOTO_ROLE_HEADSHOT: _ClassVar[PhotoRole]
    PHOTO_ROLE_REFERENCE: _ClassVar[PhotoRole]

class ConsentScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_SCOPE_UNSPECIFIED: _ClassVar[ConsentScope]
    CONSENT_SCOPE_PORTRAIT_GENERATION: _ClassVar[ConsentScope]

class OrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATE_UNSPECIFIED: _ClassVar[OrderState]
    ORDER_STATE_QUEUED: _ClassVar[OrderState]
    ORDER_STATE_TRAINING: _ClassVar[OrderState]
    ORDER_STATE_RENDERING: _ClassVar[OrderState]
    ORDER_STATE_DONE: _ClassVar[OrderState]
    ORDER_STATE_FAILED: _ClassVar[OrderState]

class LabelCorner(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_CORNER_UNSPECIFIED: _ClassVar[LabelCorner]
    LABEL_CORNER_BOTTOM_RIGHT: _ClassVar[LabelCorner]
    LABEL_CORNER_BOTTOM_LEFT: _ClassVar[LabelCorner]
    LABEL_CORNER_TOP_RIGHT: _ClassVar[LabelCorner]
    LABEL_CORNER_TOP_LEFT: _ClassVar[LabelCorner]

class PriorityTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_TIER_UNSPECIFIED: _ClassVar[PriorityTier]
    PRIORITY_TIER_STANDARD: _ClassVar[PriorityTier]
    PRIORITY_TIER_EXPRESS: _ClassVar[PriorityTier]
PHOTO_ROLE_UNSPECIFIED: PhotoRole
PHOTO_ROLE_HEADSHOT: PhotoRole
PHOTO_ROLE_REFERENCE: PhotoRole
CONSENT_SCOPE_UNSPECIFIED: ConsentScope
CONSENT_SCOPE_PORTRAIT_GENERATION: ConsentScope
ORDER_STATE_UNSPECIFIED: OrderState
ORDER_STATE_QUEUED: OrderState
ORDER_STATE_TRAINING: OrderState
ORDER_STATE_RENDERING: OrderState
ORDER_STATE_DONE: OrderState
ORDER_STATE_FAILED: OrderState
LABEL_CORNER_UNSPECIFIED: LabelCorner
LABEL_CORNER_BOTTOM_RIGHT: LabelCorner
LABEL_CORNER_BOTTOM_LEFT: LabelCorner
LABEL_CORNER_TOP_RIGHT: LabelCorner
LABEL_CORNER_TOP_LEFT: LabelCorner
PRIORITY_TIER_UNSPECIFIED: PriorityTier
PRIORITY_TIER_STANDARD: PriorityTier
PRIORITY_TIER_EXPRESS: PriorityTier

class ConsentRecord(_message.Message):
    __slots__ = ("agreement_version", "scopes", "retention_days", "granted_at")
    AGREEMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    agreement_version: str
    scopes: _containers.RepeatedScalarFieldContainer[ConsentScope]
    retention_days: int
    granted_at: _timestamp_pb2.Timestamp
    def __init__(self, agreement_version: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[ConsentScope, str]]] = ..., retention_days: _Optional[int] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FaceBox(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: int
    top: int
    right: int
    bottom: int
    def __init__(self, left: _Optional[int] = ..., top: _Optional[int] = ..., right: _Optional[int] = ..., bottom: _Optional[int] = ...) -> None: ...

class PhotoVerdict(_message.Message):
    __slots__ = ("accepted", "reasons", "messages", "face_box", "measurements", "notes", "note_messages", "captured_at")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    NOTE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    face_box: FaceBox
    measurements: FaceMeasurements
    notes: _containers.RepeatedScalarFieldContainer[str]
    note_messages: _containers.RepeatedScalarFieldContainer[str]
    captured_at: _timestamp_pb2.Timestamp
    def __init__(self, accepted: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[str]] = ..., face_box: _Optional[_Union[FaceBox, _Mapping]] = ..., measurements: _Optional[_Union[FaceMeasurements, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., note_messages: _Optional[_Iterable[str]] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FaceMeasurements(_message.Message):
    __slots__ = ("yaw_deg", "roll_deg", "pitch_deg", "sharpness", "luminance", "clipped_highlights", "crushed_shadows", "identity_distance", "consensus_distance", "background_faces", "duplicate_of")
    YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    ROLL_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    LUMINANCE_FIELD_NUMBER: _ClassVar[int]
    CLIPPED_HIGHLIGHTS_FIELD_NUMBER: _ClassVar[int]
    CRUSHED_SHADOWS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FACES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    yaw_deg: float
    roll_deg: float
    pitch_deg: float
    sharpness: float
    luminance: float
    clipped_highlights: float
    crushed_shadows: float
    identity_distance: float
    consensus_distance: float
    background_faces: int
    duplicate_of: str
    def __init__(self, yaw_deg: _Optional[float] = ..., roll_deg: _Optional[float] = ..., pitch_deg: _Optional[float] = ..., sharpness: _Optional[float] = ..., luminance: _Optional[float] = ..., clipped_highlights: _Optional[float] = ..., crushed_shadows: _Optional[float] = ..., identity_distance: _Optional[float] = ..., consensus_distance: _Optional[float] = ..., background_faces: _Optional[int] = ..., duplicate_of: _Optional[str] = ...) -> None: ...

class SetDiversity(_message.Message):
    __slots__ = ("yaw_min_deg", "yaw_max_deg", "pitch_min_deg", "pitch_max_deg", "luminance_min", "luminance_max", "advice", "advice_messages")
    YAW_MIN_DEG_FIELD_NUMBER: _ClassVar[int]
    YAW_MAX_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_MIN_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_MAX_DEG_FIELD_NUMBER: _ClassVar[int]
    LUMINANCE_MIN_FIELD_NUMBER: _ClassVar[int]
    LUMINANCE_MAX_FIELD_NUMBER: _ClassVar[int]
    ADVICE_FIELD_NUMBER: _ClassVar[int]
    ADVICE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    yaw_min_deg: float
    yaw_max_deg: float
    pitch_min_deg: float
    pitch_max_deg: float
    luminance_min: float
    luminance_max: float
    advice: _containers.RepeatedScalarFieldContainer[str]
    advice_messages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, yaw_min_deg: _Optional[float] = ..., yaw_max_deg: _Optional[float] = ..., pitch_min_deg: _Optional[float] = ..., pitch_max_deg: _Optional[float] = ..., luminance_min: _Optional[float] = ..., luminance_max: _Optional[float] = ..., advice: _Optional[_Iterable[str]] = ..., advice_messages: _Optional[_Iterable[str]] = ...) -> None: ...

class SetVerdict(_message.Message):
    __slots__ = ("sufficient", "accepted_photos", "min_accepted_photos", "recommended_photos", "headshot_accepted", "problems", "messages", "diversity", "old_photos", "old_photos_message")
    SUFFICIENT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    HEADSHOT_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    OLD_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    OLD_PHOTOS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    sufficient: bool
    accepted_photos: int
    min_accepted_photos: int
    recommended_photos: int
    headshot_accepted: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    diversity: SetDiversity
    old_photos: int
    old_photos_message: str
    def __init__(self, sufficient: _Optional[bool] = ..., accepted_photos: _Optional[int] = ..., min_accepted_photos: _Optional[int] = ..., recommended_photos: _Optional[int] = ..., headshot_accepted: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[str]] = ..., diversity: _Optional[_Union[SetDiversity, _Mapping]] = ..., old_photos: _Optional[int] = ..., old_photos_message: _Optional[str] = ...) -> None: ...

class Portrait(_message.Message):
    __slots__ = ("portrait_id", "style", "seed", "width", "height", "identity_score")
    PORTRAIT_ID_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    portrait_id: str
    style: str
    seed: int
    width: int
    height: int
    identity_score: float
    def __init__(self, portrait_id: _Optional[str] = ..., style: _Optional[str] = ..., seed: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., identity_score: _Optional[float] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "subject_id", "styles", "count", "state", "portraits", "failure_stage", "failure_reason", "created_at", "updated_at", "base_model_id", "progress_done", "progress_total", "tier")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PORTRAITS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_STAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_DONE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    subject_id: str
    styles: _containers.RepeatedScalarFieldContainer[str]
    count: int
    state: OrderState
    portraits: _containers.RepeatedCompositeFieldContainer[Portrait]
    failure_stage: str
    failure_reason: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    base_model_id: str
    progress_done: int
    progress_total: int
    tier: PriorityTier
    def __init__(self, order_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., styles: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., state: _Optional[_Union[OrderState, str]] = ..., portraits: _Optional[_Iterable[_Union[Portrait, _Mapping]]] = ..., failure_stage: _Optional[str] = ..., failure_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., base_model_id: _Optional[str] = ..., progress_done: _Optional[int] = ..., progress_total: _Optional[int] = ..., tier: _Optional[_Union[PriorityTier, str]] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker_id", "busy", "current_job_id", "jobs_completed", "jobs_failed", "device")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOBS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    JOBS_FAILED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    busy: bool
    current_job_id: str
    jobs_completed: int
    jobs_failed: int
    device: str
    def __init__(self, worker_id: _Optional[str] = ..., busy: _Optional[bool] = ..., current_job_id: _Optional[str] = ..., jobs_completed: _Optional[int] = ..., jobs_failed: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class VisibleLabel(_message.Message):
    __slots__ = ("enabled", "text", "corner")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CORNER_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    text: str
    corner: LabelCorner
    def __init__(self, enabled: _Optional[bool] = ..., text: _Optional[str] = ..., corner: _Optional[_Union[LabelCorner, str]] = ...) -> None: ...
