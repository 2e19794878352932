"""Retention with an injected clock, and the deletion protocol on a real NATS server: expiry shreds
the key and announces the deletion; confirmations from every service produce a signed certificate,
after which NATS keeps no message that names the subject."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError
from studio.v1 import events_pb2, privacy_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.config import Settings
from services.common.signatures import verify_certificate
from services.privacy.server import build_servicer
from services.privacy.server_test import consent, write_tokens
from services.privacy.vault import SubjectIdTaken, SubjectNotFound

DAY = 86_400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def announced(bus: Bus, deletion_id: str) -> events_pb2.DeletionRequested:
    stream, subject = topology.DELETIONS_STREAM.name, topology.deletion_requested_subject(deletion_id)
    message = await bus.js.get_last_msg(stream, subject)
    return events_pb2.DeletionRequested.FromString(message.data)


async def test_expiry_deletes_and_the_certificate_follows_every_confirmation(tmp_path: Path, nats_server) -> None:
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=tmp_path / "data")
    clock = Clock(1_900_000_000.0)
    servicer = build_servicer(settings, kek_file=tmp_path / "kek.json", tokens_file=write_tokens(tmp_path),
                              clock=clock)
    bus = await Bus.connect(nats_server.url, name="retention-test")
    servicer.attach_bus(bus)
    vault = servicer.vault
    short, long = consent(retention_days=1), consent(retention_days=30)
    for record in (short, long):
        record.granted_at.FromSeconds(int(clock.now))
    await vault.register_subject("t", "short-lived", short)
    await vault.register_subject("t", "long-lived", long)
    confirmations = asyncio.create_task(servicer.deletions.run_confirmations())
    try:
        assert await servicer.deletions.sweep_expired() == []
        clock.now += 2 * DAY
        [deletion] = await servicer.deletions.sweep_expired()
        assert (deletion.subject_id, deletion.reason) == ("short-lived", privacy_pb2.DELETION_REASON_RETENTION_EXPIRED)
        assert await servicer.deletions.sweep_expired() == []  # once only
        with pytest.raises(SubjectNotFound):
            await vault.data_key("t", "short-lived")
        assert len((await vault.data_key("t", "long-lived")).key) == 32
        assert (await announced(bus, deletion.deletion_id)).subject_id == "short-lived"

        for service in topology.PURGING_SERVICES:
            confirmation = events_pb2.DeletionConfirmed(deletion_id=deletion.deletion_id, service=service,
                                                        destroyed={"things": 1})
            confirmation.confirmed_at.FromSeconds(int(clock.now))
            await bus.publish(topology.deletion_confirmed_subject(deletion.deletion_id, service), confirmation)
        record = await _certified(vault, deletion.deletion_id)
        certificate = json.loads(record.certificate)
        verify_certificate(certificate, vault.signer.public_key)
        assert certificate["reason"] == "DELETION_REASON_RETENTION_EXPIRED"
        assert [entry["service"] for entry in certificate["destroyed"]][0] == "privacy"
        assert {entry["service"] for entry in certificate["destroyed"]} == {"privacy", *topology.PURGING_SERVICES}
        with pytest.raises(NotFoundError):  # the deletion's messages are erased from NATS once certified
            await announced(bus, deletion.deletion_id)
        with pytest.raises(SubjectIdTaken):
            await vault.register_subject("t", "short-lived", long)  # a deleted id is never reused
    finally:
        confirmations.cancel()
        await asyncio.gather(confirmations, return_exceptions=True)
        await bus.close()
        servicer.close()


async def _certified(vault, deletion_id: str, timeout_s: float = 20):
    for _ in range(int(timeout_s * 10)):
        record = await vault.deletion("t", deletion_id=deletion_id)
        if record and record.certificate:
            return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"deletion {deletion_id} was not certified")


def test_consent_check_uses_the_vaults_clock(tmp_path: Path) -> None:
    from services.privacy import policy

    record = consent(retention_days=1)
    record.granted_at.FromSeconds(1_000)
    assert policy.consent_shortfall(record, privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO, now=1_000 + DAY / 2) is None
    assert "retention" in policy.consent_shortfall(record, privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO, now=1_000 + DAY)
