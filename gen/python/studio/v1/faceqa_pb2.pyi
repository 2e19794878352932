from studio.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckPhotoRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "photo_id", "object_key", "role", "crop_key", "crop_size", "max_photo_age_days")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CROP_KEY_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTO_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    photo_id: str
    object_key: str
    role: _common_pb2.PhotoRole
    crop_key: str
    crop_size: int
    max_photo_age_days: int
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., photo_id: _Optional[str] = ..., object_key: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.PhotoRole, str]] = ..., crop_key: _Optional[str] = ..., crop_size: _Optional[int] = ..., max_photo_age_days: _Optional[int] = ...) -> None: ...

class CheckPhotoResponse(_message.Message):
    __slots__ = ("verdict", "crop_key")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CROP_KEY_FIELD_NUMBER: _ClassVar[int]
    verdict: _common_pb2.PhotoVerdict
    crop_key: str
    def __init__(self, verdict: _Optional[_Union[_common_pb2.PhotoVerdict, _Mapping]] = ..., crop_key: _Optional[str] = ...) -> None: ...

class StoredPhoto(_message.Message):
    __slots__ = ("photo_id", "object_key", "role", "crop_key")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CROP_KEY_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    object_key: str
    role: _common_pb2.PhotoRole
    crop_key: str
    def __init__(self, photo_id: _Optional[str] = ..., object_key: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.PhotoRole, str]] = ..., crop_key: _Optional[str] = ...) -> None: ...

class CheckPhotoSetRequest(_message.Message):
    __slots__ = ("tenant_id", "subject_id", "photos", "accepted_photos", "crop_size", "min_accepted_photos", "max_photo_age_days")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCEPTED_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    MAX_PHOTO_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subject_id: str
    photos: _containers.RepeatedCompositeFieldContainer[StoredPhoto]
    accepted_photos: _containers.RepeatedCompositeFieldContainer[StoredPhoto]
    crop_size: int
    min_accepted_photos: int
    max_photo_age_days: int
    def __init__(self, tenant_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., photos: _Optional[_Iterable[_Union[StoredPhoto, _Mapping]]] = ..., accepted_photos: _Optional[_Iterable[_Union[StoredPhoto, _Mapping]]] = ..., crop_size: _Optional[int] = ..., min_accepted_photos: _Optional[int] = ..., max_photo_age_days: _Optional[int] = ...) -> None: ...

class CheckedPhoto(_message.Message):
    __slots__ = ("photo_id", "verdict", "crop_key")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CROP_KEY_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    verdict: _common_pb2.PhotoVerdict
    crop_key: str
    def __init__(self, photo_id: _Optional[str] = ..., verdict: _Optional[_Union[_common_pb2.PhotoVerdict, _Mapping]] = ..., crop_key: _Optional[str] = ...) -> None: ...

class CheckPhotoSetResponse(_message.Message):
    __slots__ = ("photos", "set_verdict")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    SET_VERDICT_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[CheckedPhoto]
    set_verdict: _common_pb2.SetVerdict
    def __init__(self, photos: _Optional[_Iterable[_Union[CheckedPhoto, _Mapping]]] = ..., set_verdict: _Optional[_Union[_common_pb2.SetVerdict, _Mapping]] = ...) -> None: ...

class FaceEmbedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreIdentityRequest(_message.Message):
    __slots__ = ("reference_images", "reference_embeddings", "images")
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    reference_images: _containers.RepeatedScalarFieldContainer[bytes]
    reference_embeddings: _containers.RepeatedCompositeFieldContainer[FaceEmbedding]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, reference_images: _Optional[_Iterable[bytes]] = ..., reference_embeddings: _Optional[_Iterable[_Union[FaceEmbedding, _Mapping]]] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class IdentityScore(_message.Message):
    __slots__ = ("face_found", "distance", "same_person", "face_box")
    FACE_FOUND_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SAME_PERSON_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    face_found: bool
    distance: float
    same_person: bool
    face_box: _common_pb2.FaceBox
    def __init__(self, face_found: _Optional[bool] = ..., distance: _Optional[float] = ..., same_person: _Optional[bool] = ..., face_box: _Optional[_Union[_common_pb2.FaceBox, _Mapping]] = ...) -> None: ...

class ScoreIdentityResponse(_message.Message):
    __slots__ = ("scores", "reference", "threshold")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[IdentityScore]
    reference: FaceEmbedding
    threshold: float
    def __init__(self, scores: _Optional[_Iterable[_Union[IdentityScore, _Mapping]]] = ..., reference: _Optional[_Union[FaceEmbedding, _Mapping]] = ..., threshold: _Optional[float] = ...) -> None: ...
