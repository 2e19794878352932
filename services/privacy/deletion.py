"""Deletion, start to certificate: shred the data key, announce, collect every service's purge
confirmation, sign the certificate, then erase the deletion's own messages from NATS.

Everything is driven by the vault's store, so a vault killed at any point resumes on start, and a
step that failed while it runs is retried every few seconds (`run_unfinished`): an unannounced
deletion is announced again (services purge idempotently), confirmations that arrived meanwhile wait
in the durable consumer, a certified deletion's messages are purged until that succeeds, and no
shredded key can come back. A failure on one deletion never stops the work on the others."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from studio.v1 import events_pb2, privacy_pb2

from services.common import topology
from services.common.bus import Bus
from services.privacy.audit_log import AuditEntry
from services.privacy.certificate import certificate_bytes
from services.privacy.deletion_records import Confirmation, DeletionRecord
from services.privacy.vault import ShredRequest, Vault
from services.privacy.vault_types import VaultError

log = logging.getLogger(__name__)

# What a NATS request fails with: the client's errors, and timeouts / lost connections (OSError).
BUS_ERRORS = (nats.errors.Error, OSError)
# A confirmation the vault could not store (its disk, say) comes back after this long.
REDELIVER_DELAY_S = 5.0


class AnnouncementFailed(VaultError):
    """The key is shredded and the deletion recorded, but its announcement did not reach NATS; it is
    announced again by `run_unfinished` (or a repeated request)."""

    def __init__(self, record: DeletionRecord) -> None:
        super().__init__(f"deletion {record.deletion_id} is not announced yet")
        self.record = record


class InvalidConfirmation(ValueError):
    """A confirmation that can never be stored, however often it is delivered."""


@dataclass
class DeletionCoordinator:
    vault: Vault
    bus: Bus | None
    expected_services: tuple[str, ...] = topology.PURGING_SERVICES

    async def start(
        self, tenant_id: str, subject_id: str, reason: int, requested_by: str,
        extra_audit: tuple[AuditEntry, ...] = (),
    ) -> DeletionRecord:
        """Shred and announce. AnnouncementFailed where NATS did not take the announcement."""
        record = await self.vault.shred(ShredRequest(
            tenant_id, subject_id, reason, requested_by, self.expected_services, extra_audit
        ))
        if not record.announced:
            try:
                await self.announce(record)
            except BUS_ERRORS as error:
                log.warning("deletion %s shredded; its announcement failed (%s); retried later",
                            record.deletion_id, type(error).__name__)
                raise AnnouncementFailed(record) from error
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
        """Take every unfinished deletion one step further: announce what was shredded but never
        announced, certify what is complete, purge what is certified. A failing deletion is logged."""
        for record in await self.vault.unfinished_deletions():
            try:
                await self._advance(record)
            except Exception:
                log.exception("deletion %s could not be taken further; tried again later", record.deletion_id)

    async def _advance(self, record: DeletionRecord) -> None:
        if not record.announced:
            await self.announce(record)
        elif record.certificate is not None:
            await self.purge(record)
        elif not record.waiting_for:
            await self.certify(record)

    async def run_unfinished(self, interval_s: float) -> None:
        """While the vault runs: retry whatever an unfinished deletion still needs, every `interval_s`."""
        while True:
            await asyncio.sleep(interval_s)
            await self.resume()

    async def run_confirmations(self) -> None:
        assert self.bus is not None
        await self.resume()
        await self.bus.consume(
            topology.DELETIONS_STREAM.name, topology.VAULT_CONFIRMATIONS_CONSUMER.durable_name, self._handle,
            batch=16,
        )

    async def _handle(self, message: Msg) -> None:
        """Ack what is stored; terminate what can never be (it would come back forever); redeliver the rest."""
        try:
            confirmed = _confirmation(message)
        except InvalidConfirmation as error:
            log.warning("confirmation on %s dropped: %s", message.subject, error)
            await message.term()
            return
        try:
            await self._confirmed(confirmed)
        except Exception:
            log.exception("confirmation of deletion %s not stored; redelivered", confirmed.deletion_id)
            await message.nak(delay=REDELIVER_DELAY_S)
            return
        await message.ack()

    async def _confirmed(self, confirmed: events_pb2.DeletionConfirmed) -> None:
        # The raw fields: ToNanoseconds refuses (ValueError) a time outside the calendar; the vault
        # replaces any implausible time with its own time of receipt.
        claimed_at = confirmed.confirmed_at.seconds + confirmed.confirmed_at.nanos / 1e9
        confirmation = Confirmation(confirmed.service, claimed_at, dict(confirmed.destroyed))
        record = await self.vault.record_confirmation(confirmed.deletion_id, confirmation)
        if record is None:
            log.warning("confirmation for unknown deletion %s", confirmed.deletion_id)
        elif not record.waiting_for and record.certificate is None:
            try:
                await self.certify(record)
            except Exception:  # the confirmation is stored: run_unfinished certifies later
                log.exception("deletion %s not certified yet; tried again later", record.deletion_id)

    async def certify(self, record: DeletionRecord) -> None:
        issued_at = self.vault.clock()
        certificate = certificate_bytes(record, issued_at, self.vault.signer)
        if await self.vault.store_certificate(record, certificate, issued_at):
            log.info("deletion %s certified", record.deletion_id)
            await self.purge(record)

    async def purge(self, record: DeletionRecord) -> None:
        """The request and confirmations name the subject: once certified, NATS keeps none of them."""
        if self.bus is None:
            log.warning("no NATS connection: deletion %s waits for its messages to be purged", record.deletion_id)
            return
        await self.bus.purge_subject(topology.DELETIONS_STREAM.name, topology.deletion_subjects(record.deletion_id))
        await self.vault.mark_purged(record.deletion_id)

    async def run_retention(self, interval_s: float) -> None:
        """Delete subjects whose retention period has ended."""
        while True:
            await self.sweep_expired()
            await asyncio.sleep(interval_s)

    async def sweep_expired(self) -> list[DeletionRecord]:
        started = []
        for tenant_id, subject_id in await self.vault.expired_subjects():
            try:
                started.append(await self.start(
                    tenant_id, subject_id, privacy_pb2.DELETION_REASON_RETENTION_EXPIRED, "privacy"
                ))
            except AnnouncementFailed as failed:  # shredded all the same; run_unfinished announces it
                started.append(failed.record)
        return started


def _confirmation(message: Msg) -> events_pb2.DeletionConfirmed:
    """The message's confirmation; InvalidConfirmation where it does not decode or does not name the
    deletion and service its subject names."""
    try:
        confirmed = events_pb2.DeletionConfirmed.FromString(message.data)
    except DecodeError:
        raise InvalidConfirmation("not a DeletionConfirmed message") from None
    if not confirmed.deletion_id or not confirmed.service:
        raise InvalidConfirmation("deletion_id and service are required")
    if message.subject != topology.deletion_confirmed_subject(confirmed.deletion_id, confirmed.service):
        raise InvalidConfirmation("its deletion_id and service do not match its subject")
    return confirmed
