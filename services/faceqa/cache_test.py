"""What faceqa keeps of a subject in memory (its accepted photos' analyses) and how a deletion clears it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.blobstore import open_blob_store
from services.common.deletion_guard import DeletionGuard
from services.common.vault_client import SealedStore, VaultClient
from services.faceqa.checks import PhotoCheck
from services.faceqa.server import CheckCache, FaceQAServicer

ACCEPTED = PhotoCheck(accepted=True, embedding=(0.1, 0.2), crop_png=b"png")


def photo_key(subject_id: str, photo: str) -> str:
    return f"tenants/t/subjects/{subject_id}/photos/{photo}"


def test_forgetting_a_subject_drops_its_analyses_only() -> None:
    cache = CheckCache()
    for subject_id in ("s1", "s11", "s2"):
        cache.put(photo_key(subject_id, "p"), ACCEPTED)
    assert cache.forget_subject("s1") == 1
    assert cache.get(photo_key("s1", "p")) is None
    assert cache.get(photo_key("s11", "p")) is not None and cache.get(photo_key("s2", "p")) is not None
    assert cache.get(photo_key("s2", "p")).crop_png is None  # the crop is sealed in the store, not kept here


@pytest.mark.asyncio(loop_scope="session")
async def test_an_analysis_that_ends_after_the_deletion_is_not_kept(tmp_path: Path) -> None:
    guard = DeletionGuard()
    vault = VaultClient("127.0.0.1:9", "")  # never asked
    servicer = FaceQAServicer(SealedStore(await open_blob_store(f"file://{tmp_path}"), vault, guard), pool=None)
    try:
        servicer._remember("alive", photo_key("alive", "p"), ACCEPTED)
        guard.mark_deleted("gone")  # the deletion came while the photo was being analysed
        servicer._remember("gone", photo_key("gone", "p"), ACCEPTED)
        assert servicer.cache.get(photo_key("alive", "p")) is not None
        assert servicer.cache.get(photo_key("gone", "p")) is None
    finally:
        await vault.close()
