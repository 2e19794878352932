"""faceqa's part of a deletion: the training crops it wrote and the analyses it keeps in memory."""

from __future__ import annotations

from studio.v1 import events_pb2

from services.common.objects import subject_area
from services.common.vault_client import SealedStore
from services.faceqa.server import CheckCache


def purge_handler(sealed: SealedStore, cache: CheckCache):
    async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
        analyses = cache.forget_subject(request.subject_id)
        crops = await sealed.blobs.delete_prefix(subject_area(request.tenant_id, request.subject_id, "crops"))
        return {"crops": crops, "cached_analyses": analyses}

    return purge
