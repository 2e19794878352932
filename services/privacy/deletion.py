"""Deletion, start to certificate: shred the data key, announce, collect every service's purge
confirmation, sign the certificate, then erase the deletion's own messages from NATS.

Everything is driven by the vault's store, so a vault killed at any point resumes on start: an
unannounced deletion is announced again (services purge idempotently), confirmations that arrived
meanwhile wait in the durable consumer, and no shredded key can come back."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from studio.v1 import events_pb2, privacy_pb2

from services.common import topology
from services.common.bus import Bus
from services.privacy.audit_log import AuditEntry
from services.privacy.certificate import certificate_bytes
from services.privacy.deletion_records import Confirmation, DeletionRecord
from services.privacy.vault import ShredRequest, Vault

log = logging.getLogger(__name__)


@dataclass
class DeletionCoordinator:
    vault: Vault
    bus: Bus | None
    expected_services: tuple[str, ...] = topology.PURGING_SERVICES

    async def start(
        self, tenant_id: str, subject_id: str, reason: int, requested_by: str,
        extra_audit: tuple[AuditEntry, ...] = (),
    ) -> DeletionRecord:
        record = await self.vault.shred(ShredRequest(
            tenant_id, subject_id, reason, requested_by, self.expected_services, extra_audit
        ))
        if not record.announced:
            await self.announce(record)
        return record

    async def announce(self, record: DeletionRecord) -> None:
        if self.bus is None:
            log.warning("no NATS connection: deletion %s waits to be announced", record.deletion_id)
            return
        request = events_pb2.DeletionRequested(
            deletion_id=record.deletion_id, tenant_id=record.tenant_id, subject_id=record.subject_id
        )
        request.requested_at.FromNanoseconds(int(record.requested_at * 1e9))
        await self.bus.publish(
            topology.deletion_requested_subject(record.deletion_id), request, msg_id=record.deletion_id
        )
        await self.vault.mark_announced(record.deletion_id)

    async def resume(self) -> None:
        """On start: announce what was shredded but never announced; certify what is complete."""
        for record in await self.vault.pending_deletions():
            if not record.announced:
                await self.announce(record)
            elif not record.waiting_for:
                await self.certify(record)

    async def run_confirmations(self) -> None:
        assert self.bus is not None
        await self.resume()

        async def handle(message) -> None:
            await self._confirmed(events_pb2.DeletionConfirmed.FromString(message.data))
            await message.ack()

        await self.bus.consume(
            topology.DELETIONS_STREAM.name, topology.VAULT_CONFIRMATIONS_CONSUMER.durable_name, handle, batch=16
        )

    async def _confirmed(self, confirmed: events_pb2.DeletionConfirmed) -> None:
        confirmation = Confirmation(
            confirmed.service, confirmed.confirmed_at.ToNanoseconds() / 1e9, dict(confirmed.destroyed)
        )
        record = await self.vault.record_confirmation(confirmed.deletion_id, confirmation)
        if record is None:
            log.warning("confirmation for unknown deletion %s", confirmed.deletion_id)
        elif not record.waiting_for and record.certificate is None:
            await self.certify(record)

    async def certify(self, record: DeletionRecord) -> None:
        issued_at = self.vault.clock()
        await self.vault.store_certificate(record, certificate_bytes(record, issued_at, self.vault.signer), issued_at)
        if self.bus is not None:
            # The request and confirmations name the subject: once certified, NATS keeps none of them.
            await self.bus.purge_subject(topology.DELETIONS_STREAM.name, topology.deletion_subjects(record.deletion_id))
        log.info("deletion %s certified", record.deletion_id)

    async def run_retention(self, interval_s: float) -> None:
        """Delete subjects whose retention period has ended."""
        while True:
            await self.sweep_expired()
            await asyncio.sleep(interval_s)

    async def sweep_expired(self) -> list[DeletionRecord]:
        started = []
        for tenant_id, subject_id in await self.vault.expired_subjects():
            started.append(await self.start(
                tenant_id, subject_id, privacy_pb2.DELETION_REASON_RETENTION_EXPIRED, "privacy"
            ))
        return started
