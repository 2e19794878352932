"""The Privacy gRPC API: authenticates the calling service, applies the policy, audits every decision."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from prometheus_client import Counter
from studio.v1 import common_pb2, privacy_pb2, privacy_pb2_grpc

from services.common.bus import Bus
from services.common.config import ConfigError, Settings
from services.common.secrets import SERVICE_TOKEN_METADATA, constant_time_equal, read_secret_file
from services.common.signatures import SigningKey
from services.common.tls import peer_common_name
from services.privacy import policy
from services.privacy.audit_export import AuditExport, export_replies
from services.privacy.audit_log import AuditEntry
from services.privacy.certificate import deletion_proto
from services.privacy.deletion import AnnouncementFailed, DeletionCoordinator
from services.privacy.kek import FileKek, KekError, KekProvider
from services.privacy.provenance_key import MAX_PAYLOAD_BYTES, ProvenanceKey
from services.privacy.requests import STORAGE_FULL_REASON, Denied, require_ids, validated_consent
from services.privacy.store import StorageFull, stored_holdings
from services.privacy.vault import (
    ConsentConflict,
    RotationUnderWay,
    SubjectIdTaken,
    SubjectNotFound,
    Vault,
    vault_path,
)

log = logging.getLogger(__name__)

KEK_FILE_ENV = "STUDIO_KEK_FILE"
TOKENS_FILE_ENV = "STUDIO_SERVICE_TOKENS_FILE"
SIGNING_KEY_ENV = "STUDIO_SIGNING_KEY_FILE"
PROVENANCE_KEY_ENV = "STUDIO_PROVENANCE_KEY_FILE"
PROVENANCE_CHAIN_ENV = "STUDIO_PROVENANCE_CHAIN_FILE"
SERVICE_NAME = privacy_pb2.DESCRIPTOR.services_by_name["Privacy"].full_name
UNAUTHENTICATED_CALLER = "-"
STORAGE_FULL = Counter("studio_vault_storage_full_total", "Requests the vault refused: its store could not grow",
                       ["method"])


def load_service_tokens(path: Path) -> dict[str, str]:
    try:
        document = json.loads(read_secret_file(path))
    except (OSError, ValueError) as error:
        raise ConfigError(f"service tokens file {path} is unreadable or not JSON") from error
    if not isinstance(document, dict) or not all(
        isinstance(name, str) and isinstance(token, str) and token for name, token in document.items()
    ):
        raise ConfigError(f"service tokens file {path} must map service names to non-empty tokens")
    return document


class PrivacyServicer(privacy_pb2_grpc.PrivacyServicer):
    def __init__(
        self, vault: Vault, service_tokens: dict[str, str], bus: Bus | None = None,
        provenance: ProvenanceKey | None = None,
    ) -> None:
        self.vault = vault
        self.provenance = provenance
        self._tokens = dict(service_tokens)
        self.deletions = DeletionCoordinator(vault, bus)

    def attach_bus(self, bus: Bus) -> None:
        self.deletions.bus = bus

    def close(self) -> None:
        self.vault.close()

    async def RegisterSubject(self, request, context) -> privacy_pb2.RegisterSubjectResponse:
        async def decide(caller: str) -> privacy_pb2.RegisterSubjectResponse:
            if not policy.may_register_subjects(caller):
                raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                             f"service {caller!r} may not register subjects", "DENIED_POLICY")
            require_ids(request.tenant_id, request.subject_id)
            consent = validated_consent(request)
            try:
                # The decision's audit entry commits with the registration, or neither does.
                registration = await self.vault.register_subject(
                    request.tenant_id, request.subject_id, consent,
                    AuditEntry(caller, "RegisterSubject", request.tenant_id, request.subject_id, "", "ALLOWED"),
                )
            except SubjectIdTaken:
                raise Denied(grpc.StatusCode.ALREADY_EXISTS,
                             "subject id is taken by another tenant or was deleted", "DENIED_CONFLICT") from None
            except ConsentConflict:
                raise Denied(grpc.StatusCode.ALREADY_EXISTS,
                             "subject is already registered with other consent (agreement version, scopes,"
                             " retention or grant time); registering again does not change consent",
                             "DENIED_CONFLICT") from None
            return privacy_pb2.RegisterSubjectResponse(
                key_id=registration.key_id, key_version=registration.key_version
            )

        return await self._decide(context, "RegisterSubject", request, "", decide, audited_inside=True)

    async def GetDataKey(self, request, context) -> privacy_pb2.GetDataKeyResponse:
        purpose = policy.purpose_name(request.purpose)

        async def decide(caller: str) -> privacy_pb2.GetDataKeyResponse:
            require_ids(request.tenant_id, request.subject_id)
            if request.purpose == privacy_pb2.KEY_PURPOSE_UNSPECIFIED:
                raise Denied(grpc.StatusCode.INVALID_ARGUMENT, "purpose is required", "INVALID_ARGUMENT")
            if not policy.purpose_allowed(caller, request.purpose):
                raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                             f"service {caller!r} may not use purpose {purpose}", "DENIED_POLICY")
            consent = await self._consent(request.tenant_id, request.subject_id)
            shortfall = policy.consent_shortfall(consent, request.purpose, now=self.vault.clock())
            if shortfall:
                raise Denied(grpc.StatusCode.FAILED_PRECONDITION, shortfall, "DENIED_CONSENT")
            try:
                data_key = await self.vault.data_key(request.tenant_id, request.subject_id)
            except SubjectNotFound:  # shredded since the consent check
                raise Denied(grpc.StatusCode.NOT_FOUND, "subject not found (deleted)", "NOT_FOUND") from None
            return privacy_pb2.GetDataKeyResponse(
                data_key=data_key.key, key_id=data_key.key_id, key_version=data_key.key_version
            )

        return await self._decide(context, "GetDataKey", request, purpose, decide)

    async def GetConsent(self, request, context) -> privacy_pb2.GetConsentResponse:
        async def decide(caller: str) -> privacy_pb2.GetConsentResponse:
            if not policy.may_read_consent(caller):
                raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                             f"service {caller!r} may not read consent", "DENIED_POLICY")
            require_ids(request.tenant_id, request.subject_id)
            consent = await self._consent(request.tenant_id, request.subject_id)
            return privacy_pb2.GetConsentResponse(consent=consent)

        return await self._decide(context, "GetConsent", request, "", decide)

    async def ShredSubject(self, request, context) -> privacy_pb2.ShredSubjectResponse:
        async def decide(caller: str) -> privacy_pb2.ShredSubjectResponse:
            self._require(policy.may_manage_deletions(caller), caller, "delete subjects")
            require_ids(request.tenant_id, request.subject_id)
            reason = request.reason or privacy_pb2.DELETION_REASON_REQUESTED
            if reason not in privacy_pb2.DeletionReason.values():
                raise Denied(grpc.StatusCode.INVALID_ARGUMENT, "unknown deletion reason", "INVALID_ARGUMENT")
            record = await self._start_deletion(request.tenant_id, request.subject_id, reason, caller)
            return privacy_pb2.ShredSubjectResponse(deletion=deletion_proto(record))

        return await self._decide(context, "ShredSubject", request, "", decide)

    async def RecordRevocation(self, request, context) -> privacy_pb2.RecordRevocationResponse:
        async def decide(caller: str) -> privacy_pb2.RecordRevocationResponse:
            self._require(policy.may_manage_deletions(caller), caller, "record consent revocations")
            require_ids(request.tenant_id, request.subject_id)
            revocation = AuditEntry(caller, "RevokeConsent", request.tenant_id, request.subject_id, "", "REVOKED")
            record = await self._start_deletion(
                request.tenant_id, request.subject_id, privacy_pb2.DELETION_REASON_CONSENT_REVOKED, caller,
                (revocation,),
            )
            return privacy_pb2.RecordRevocationResponse(deletion=deletion_proto(record))

        return await self._decide(context, "RecordRevocation", request, "", decide)

    async def GetDeletionStatus(self, request, context) -> privacy_pb2.GetDeletionStatusResponse:
        async def decide(caller: str) -> privacy_pb2.GetDeletionStatusResponse:
            self._require(policy.may_manage_deletions(caller), caller, "read deletions")
            if not request.tenant_id or not (request.deletion_id or request.subject_id):
                raise Denied(grpc.StatusCode.INVALID_ARGUMENT,
                             "tenant_id and a deletion_id or subject_id are required", "INVALID_ARGUMENT")
            record = await self.vault.deletion(
                request.tenant_id, deletion_id=request.deletion_id, subject_id=request.subject_id
            )
            if record is None:
                raise Denied(grpc.StatusCode.NOT_FOUND, "deletion not found", "NOT_FOUND")
            return privacy_pb2.GetDeletionStatusResponse(deletion=deletion_proto(record))

        return await self._decide(context, "GetDeletionStatus", request, "", decide)

    async def RotateKek(self, request, context) -> privacy_pb2.RotateKekResponse:
        async def decide(caller: str) -> privacy_pb2.RotateKekResponse:
            self._require(policy.may_administer(caller), caller, "rotate the master key")
            try:
                rotation = await self.vault.rotate_kek(caller)
            except RotationUnderWay as error:
                raise Denied(grpc.StatusCode.FAILED_PRECONDITION, str(error), "DENIED_CONFLICT") from None
            except KekError as error:
                raise Denied(grpc.StatusCode.FAILED_PRECONDITION, str(error), "ERROR") from None
            return privacy_pb2.RotateKekResponse(
                new_version=rotation.new_version, keys_rewrapped=rotation.rewrapped,
                retired_versions=rotation.retired_versions,
            )

        return await self._decide(context, "RotateKek", request, "", decide)

    async def ExportAudit(self, request, context):
        """Read a page at a time as the caller takes the replies: any length, bounded memory, no lock held."""
        async def decide(caller: str) -> AuditExport:
            self._require(policy.may_administer(caller), caller, "export the audit log")
            return await self.vault.export_audit()

        export = await self._decide(context, "ExportAudit", request, "", decide)
        try:
            async with contextlib.aclosing(export_replies(export, request.batch)) as replies:
                async for reply in replies:
                    yield reply
        except sqlite3.Error:
            log.exception("ExportAudit: reading the audit log failed after %s", export.head)
            await context.abort(grpc.StatusCode.INTERNAL, "reading the audit log failed in the vault")

    async def ExportSubjectAudit(self, request, context):
        async def decide(caller: str) -> list[dict]:
            self._require(policy.may_read_subject_audit(caller), caller, "read a subject's audit entries")
            require_ids(request.tenant_id, request.subject_id)
            return await self.vault.subject_audit(request.tenant_id, request.subject_id)

        for record in await self._decide(context, "ExportSubjectAudit", request, "", decide):
            yield privacy_pb2.ExportSubjectAuditResponse(json=json.dumps(record, sort_keys=True))

    async def GetSigningKey(self, request, context) -> privacy_pb2.GetSigningKeyResponse:
        return privacy_pb2.GetSigningKeyResponse(
            public_key_pem=self.vault.signer.public_pem, key_id=self.vault.signer.key_id
        )

    async def PrepareProvenance(self, request, context) -> privacy_pb2.PrepareProvenanceResponse:
        async def decide(caller: str) -> privacy_pb2.PrepareProvenanceResponse:
            key = self._provenance_key(caller)
            if not request.tenant_id or not request.order_id:
                raise Denied(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id and order_id are required",
                             "INVALID_ARGUMENT")
            return privacy_pb2.PrepareProvenanceResponse(
                certificate_chain_pem=key.chain_pem, algorithm=key.algorithm,
                order_reference=key.order_reference(request.tenant_id, request.order_id),
            )

        return await self._decide(context, "PrepareProvenance", request, "", decide)

    async def SignProvenance(self, request, context) -> privacy_pb2.SignProvenanceResponse:
        async def decide(caller: str) -> privacy_pb2.SignProvenanceResponse:
            key = self._provenance_key(caller)
            if not request.tenant_id or not 1 <= len(request.payload) <= MAX_PAYLOAD_BYTES:
                raise Denied(grpc.StatusCode.INVALID_ARGUMENT,
                             f"tenant_id and a payload of 1..{MAX_PAYLOAD_BYTES} bytes are required",
                             "INVALID_ARGUMENT")
            return privacy_pb2.SignProvenanceResponse(signature=key.sign(request.payload))

        # Audited by tenant only: no signing record names a subject, so a deletion has none to purge.
        return await self._decide(context, "SignProvenance", request, "", decide)

    def _provenance_key(self, caller: str) -> ProvenanceKey:
        self._require(policy.may_sign_provenance(caller), caller, "sign provenance manifests")
        if self.provenance is None:
            raise Denied(grpc.StatusCode.FAILED_PRECONDITION,
                         f"no provenance signing key is configured ({PROVENANCE_KEY_ENV}, {PROVENANCE_CHAIN_ENV})",
                         "ERROR")
        return self.provenance

    async def _start_deletion(self, tenant_id: str, subject_id: str, reason: int, caller: str, extra=()):
        try:
            return await self.deletions.start(tenant_id, subject_id, reason, caller, extra)
        except SubjectNotFound:
            raise Denied(grpc.StatusCode.NOT_FOUND, "subject not found", "NOT_FOUND") from None
        except AnnouncementFailed as failed:
            raise Denied(
                grpc.StatusCode.UNAVAILABLE,
                f"the subject's key is shredded and deletion {failed.record.deletion_id} proceeds, but announcing"
                " it to the other services failed (NATS); the vault retries on its own, or ask again",
                "SHREDDED_UNANNOUNCED",
            ) from None

    @staticmethod
    def _require(allowed: bool, caller: str, what: str) -> None:
        if not allowed:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, f"service {caller!r} may not {what}", "DENIED_POLICY")

    async def _decide(self, context, action: str, request, purpose: str, decide, audited_inside: bool = False):
        """Authenticate, run the decision, audit its outcome, and turn a denial into a status.
        `audited_inside`: the decision wrote its ALLOWED entry in its own transaction. A full store refuses the
        call (RESOURCE_EXHAUSTED, naming the vault's storage): nothing goes out that could not be audited."""
        try:
            return await self._decide_audited(context, action, request, purpose, decide, audited_inside)
        except StorageFull as full:
            STORAGE_FULL.labels(action).inc()
            log.error("%s refused, the vault's storage is full: %s", action, full)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, STORAGE_FULL_REASON)

    async def _decide_audited(self, context, action: str, request, purpose: str, decide, audited_inside: bool):
        caller = self._caller(context)
        try:
            if caller is None:
                raise Denied(grpc.StatusCode.UNAUTHENTICATED,
                             f"missing or unknown {SERVICE_TOKEN_METADATA}", "DENIED_UNAUTHENTICATED")
            response = await decide(caller)
        except Denied as denied:
            await self._audit(caller, action, request, purpose, denied.outcome)
            log.warning("%s denied for %s: %s", action, caller or UNAUTHENTICATED_CALLER, denied.reason)
            await context.abort(denied.code, denied.reason)
        except StorageFull:
            raise
        except Exception:
            log.exception("%s failed for %s", action, caller or UNAUTHENTICATED_CALLER)
            await self._audit(caller, action, request, purpose, "ERROR")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the vault")
        # Fail closed: nothing is handed out unless its decision made it into the audit log.
        if not audited_inside:
            await self._audit(caller, action, request, purpose, "ALLOWED")
        return response

    async def _audit(self, caller: str | None, action: str, request, purpose: str, outcome: str) -> None:
        await self.vault.append_audit(AuditEntry(
            service=caller or UNAUTHENTICATED_CALLER, action=action,
            tenant_id=getattr(request, "tenant_id", ""), subject_id=getattr(request, "subject_id", ""),
            purpose=purpose, outcome=outcome,
        ))

    def _caller(self, context) -> str | None:
        """The calling service: its verified mTLS certificate's name, else its token's owner."""
        certified = peer_common_name(context)
        if certified:
            return certified
        presented = dict(context.invocation_metadata() or ()).get(SERVICE_TOKEN_METADATA)
        if not isinstance(presented, str) or not presented:
            return None
        caller = None
        # Compare against every token so the time taken does not reveal which one nearly matched.
        for service, token in self._tokens.items():
            if constant_time_equal(presented, token):
                caller = service
        return caller

    async def _consent(self, tenant_id: str, subject_id: str) -> common_pb2.ConsentRecord:
        try:
            return await self.vault.consent(tenant_id, subject_id)
        except SubjectNotFound:
            raise Denied(grpc.StatusCode.NOT_FOUND, "subject not found", "NOT_FOUND") from None


def build_servicer(
    settings: Settings,
    *,
    kek: KekProvider | None = None,
    kek_file: Path | None = None,
    tokens_file: Path | None = None,
    signing_key_file: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> PrivacyServicer:
    """Explicit arguments win; otherwise STUDIO_KEK_FILE (default DATA_DIR/privacy/kek.json),
    STUDIO_SIGNING_KEY_FILE (default DATA_DIR/privacy/signing-key.pem) and STUDIO_SERVICE_TOKENS_FILE
    (required unless every caller uses mTLS); the C2PA provenance key as _provenance_key says."""
    data_dir = Path(settings.require("data_dir"))
    # Key files are created only for a store that holds nothing under them yet.
    holdings = stored_holdings(vault_path(data_dir))
    if kek is None:
        kek = FileKek(kek_file or _path_from_env(KEK_FILE_ENV) or data_dir / "privacy" / "kek.json",
                      create=not holdings.wrapped_keys)
    signer = SigningKey.from_file(
        signing_key_file or _path_from_env(SIGNING_KEY_ENV) or data_dir / "privacy" / "signing-key.pem",
        create=not holdings.signed_documents,
    )
    tokens_path = tokens_file or _path_from_env(TOKENS_FILE_ENV)
    tokens = load_service_tokens(tokens_path) if tokens_path else {}
    return PrivacyServicer(
        Vault.open(data_dir, kek, signer, clock=clock), tokens, provenance=_provenance_key(data_dir)
    )


def _provenance_key(data_dir: Path) -> ProvenanceKey | None:
    """STUDIO_PROVENANCE_KEY_FILE + STUDIO_PROVENANCE_CHAIN_FILE (default DATA_DIR/privacy/provenance.key
    and provenance-chain.pem); None (signing refused, the vault serves the rest) when the key file is absent, as
    in Kubernetes before the operator filled the studio-provenance Secret (mounted optional)."""
    key_file = _path_from_env(PROVENANCE_KEY_ENV) or data_dir / "privacy" / "provenance.key"
    chain_file = _path_from_env(PROVENANCE_CHAIN_ENV) or data_dir / "privacy" / "provenance-chain.pem"
    if not key_file.exists():
        log.warning("no provenance signing key at %s: portraits cannot be signed", key_file)
        return None
    return ProvenanceKey.from_files(key_file, chain_file)


def add_to_server(servicer: PrivacyServicer, server: grpc.aio.Server) -> list[str]:
    privacy_pb2_grpc.add_PrivacyServicer_to_server(servicer, server)
    return [SERVICE_NAME]


def _path_from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
