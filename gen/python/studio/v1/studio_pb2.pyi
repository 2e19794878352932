import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from studio.v1 import common_pb2 as _common_pb2
from studio.v1 import events_pb2 as _events_pb2
from studio.v1 import privacy_pb2 as _privacy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSubjectRequest(_message.Message):
    __slots__ = ("external_ref", "consent", "idempotency_key")
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    external_ref: str
    consent: _common_pb2.ConsentRecord
    idempotency_key: str
    def __init__(self, external_ref: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.ConsentRecord, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class PhotoSummary(_message.Message):
    __slots__ = ("photo_id", "filename", "role", "verdict", "size_bytes", "client_photo_id", "already_uploaded")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    filename: str
    role: _common_pb2.PhotoRole
    verdict: _common_pb2.PhotoVerdict
    size_bytes: int
    client_photo_id: str
    already_uploaded: bool
    def __init__(self, photo_id: _Optional[str] = ..., filename: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.PhotoRole, str]] = ..., verdict: _Optional[_Union[_common_pb2.PhotoVerdict, _Mapping]] = ..., size_bytes: _Optional[int] = ..., client_photo_id: _Optional[str] = ..., already_uploaded: _Optional[bool] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("subject_id", "external_ref", "consent", "created_at", "photos", "set_verdict")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    SET_VERDICT_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    external_ref: str
    consent: _common_pb2.ConsentRecord
    created_at: _timestamp_pb2.Timestamp
    photos: _containers.RepeatedCompositeFieldContainer[PhotoSummary]
    set_verdict: _common_pb2.SetVerdict
    def __init__(self, subject_id: _Optional[str] = ..., external_ref: _Optional[str] = ..., consent: _Optional[_Union[_common_pb2.ConsentRecord, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., photos: _Optional[_Iterable[_Union[PhotoSummary, _Mapping]]] = ..., set_verdict: _Optional[_Union[_common_pb2.SetVerdict, _Mapping]] = ...) -> None: ...

class CreateSubjectResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class GetSubjectRequest(_message.Message):
    __slots__ = ("subject_id",)
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    def __init__(self, subject_id: _Optional[str] = ...) -> None: ...

class GetSubjectResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class PhotoHeader(_message.Message):
    __slots__ = ("subject_id", "role", "filename", "client_photo_id")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    role: _common_pb2.PhotoRole
    filename: str
    client_photo_id: str
    def __init__(self, subject_id: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.PhotoRole, str]] = ..., filename: _Optional[str] = ..., client_photo_id: _Optional[str] = ...) -> None: ...

class UploadPhotosRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PhotoHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PhotoHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadPhotosResponse(_message.Message):
    __slots__ = ("photos", "set_verdict")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    SET_VERDICT_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[PhotoSummary]
    set_verdict: _common_pb2.SetVerdict
    def __init__(self, photos: _Optional[_Iterable[_Union[PhotoSummary, _Mapping]]] = ..., set_verdict: _Optional[_Union[_common_pb2.SetVerdict, _Mapping]] = ...) -> None: ...

class CreateOrderRequest(_message.Message):
    __slots__ = ("subject_id", "styles", "count", "idempotency_key", "tier")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    styles: _containers.RepeatedScalarFieldContainer[str]
    count: int
    idempotency_key: str
    tier: _common_pb2.PriorityTier
    def __init__(self, subject_id: _Optional[str] = ..., styles: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.PriorityTier, str]] = ...) -> None: ...

class CreateOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _common_pb2.Order
    def __init__(self, order: _Optional[_Union[_common_pb2.Order, _Mapping]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order", "history")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    order: _common_pb2.Order
    history: _containers.RepeatedCompositeFieldContainer[_events_pb2.OrderEvent]
    def __init__(self, order: _Optional[_Union[_common_pb2.Order, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_events_pb2.OrderEvent, _Mapping]]] = ...) -> None: ...

class WatchOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class WatchOrderResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.OrderEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.OrderEvent, _Mapping]] = ...) -> None: ...

class DownloadPortraitRequest(_message.Message):
    __slots__ = ("order_id", "portrait_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    portrait_id: str
    def __init__(self, order_id: _Optional[str] = ..., portrait_id: _Optional[str] = ...) -> None: ...

class PortraitInfo(_message.Message):
    __slots__ = ("portrait", "content_type", "size_bytes")
    PORTRAIT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    portrait: _common_pb2.Portrait
    content_type: str
    size_bytes: int
    def __init__(self, portrait: _Optional[_Union[_common_pb2.Portrait, _Mapping]] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class DownloadPortraitResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: PortraitInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[PortraitInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class DeleteSubjectRequest(_message.Message):
    __slots__ = ("subject_id",)
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    def __init__(self, subject_id: _Optional[str] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("subject_id",)
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    def __init__(self, subject_id: _Optional[str] = ...) -> None: ...

class GetDeletionRequest(_message.Message):
    __slots__ = ("deletion_id", "subject_id")
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    deletion_id: str
    subject_id: str
    def __init__(self, deletion_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class DeleteSubjectResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: _privacy_pb2.Deletion
    def __init__(self, deletion: _Optional[_Union[_privacy_pb2.Deletion, _Mapping]] = ...) -> None: ...

class RevokeConsentResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: _privacy_pb2.Deletion
    def __init__(self, deletion: _Optional[_Union[_privacy_pb2.Deletion, _Mapping]] = ...) -> None: ...

class GetDeletionResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: _privacy_pb2.Deletion
    def __init__(self, deletion: _Optional[_Union[_privacy_pb2.Deletion, _Mapping]] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _common_pb2.Order
    def __init__(self, order: _Optional[_Union[_common_pb2.Order, _Mapping]] = ...) -> None: ...

class ExportSubjectRequest(_message.Message):
    __slots__ = ("subject_id",)
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    def __init__(self, subject_id: _Optional[str] = ...) -> None: ...

class ExportInfo(_message.Message):
    __slots__ = ("subject_id", "content_type", "filename")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    content_type: str
    filename: str
    def __init__(self, subject_id: _Optional[str] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class ExportSubjectResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: ExportInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[ExportInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ListSubjectsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "created_after", "created_before", "external_ref")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    external_ref: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., external_ref: _Optional[str] = ...) -> None: ...

class ListSubjectsResponse(_message.Message):
    __slots__ = ("subjects", "next_page_token")
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subjects: _containers.RepeatedCompositeFieldContainer[Subject]
    next_page_token: str
    def __init__(self, subjects: _Optional[_Iterable[_Union[Subject, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "subject_id", "states", "created_after", "created_before")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    subject_id: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.OrderState]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., subject_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.OrderState, str]]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[_common_pb2.Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[_common_pb2.Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListStylesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StylePreset(_message.Message):
    __slots__ = ("name", "title", "prompt", "negative_prompt", "width", "height", "steps", "guidance", "scheduler", "angle", "lighting", "expression", "outfit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    ANGLE_FIELD_NUMBER: _ClassVar[int]
    LIGHTING_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    OUTFIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    angle: str
    lighting: str
    expression: str
    outfit: str
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., scheduler: _Optional[str] = ..., angle: _Optional[str] = ..., lighting: _Optional[str] = ..., expression: _Optional[str] = ..., outfit: _Optional[str] = ...) -> None: ...

class ListStylesResponse(_message.Message):
    __slots__ = ("styles", "max_count_per_style")
    STYLES_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_PER_STYLE_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedCompositeFieldContainer[StylePreset]
    max_count_per_style: int
    def __init__(self, styles: _Optional[_Iterable[_Union[StylePreset, _Mapping]]] = ..., max_count_per_style: _Optional[int] = ...) -> None: ...
