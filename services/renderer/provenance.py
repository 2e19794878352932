"""Every delivered portrait labelled and signed: the tenant's visible label (if on), plain XMP
"AI-generated" fields, then a C2PA manifest whose hard binding covers all of it, signed by the vault
(the studio's provenance key never reaches the renderer)."""

from __future__ import annotations

import asyncio
import datetime
import io
from dataclasses import dataclass, field

import c2pa
import grpc
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from studio.v1 import common_pb2, events_pb2, privacy_pb2

from services.common.provenance import (
    ACTIONS_ASSERTION,
    GENERATOR_NAME,
    PORTRAIT_ASSERTION,
    TRAINED_ALGORITHMIC_MEDIA,
    TRAINING_MINING_ASSERTION,
    TRAINING_MINING_USES,
    XMP_PNG_KEYWORD,
    generator_version,
    xmp_packet,
)
from services.common.vault_client import VaultClient
from services.common.workqueue import PermanentJobError
from services.renderer.visible_label import draw_label

VAULT_TIMEOUT_S = 15.0
ALGORITHMS = {"es256": c2pa.C2paSigningAlg.ES256, "ed25519": c2pa.C2paSigningAlg.ED25519}
# The portrait itself is the asset; a second (thumbnail) copy inside the manifest adds nothing.
C2PA_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
PERMANENT_VAULT_CODES = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
                         grpc.StatusCode.INVALID_ARGUMENT)


@dataclass(frozen=True)
class PortraitFacts:
    style: str
    created: str  # ISO 8601, UTC
    order_reference: str
    base_model_id: str


def manifest_definition(facts: PortraitFacts) -> dict:
    generator = {"name": GENERATOR_NAME, "version": generator_version()}
    return {
        "claim_generator_info": [generator],
        "title": "AI-generated portrait",
        "format": "image/png",
        "assertions": [
            {"label": ACTIONS_ASSERTION, "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": generator, "when": facts.created,
            }]}},
            {"label": TRAINING_MINING_ASSERTION, "data": {"entries": {
                use: {"use": "notAllowed"} for use in TRAINING_MINING_USES
            }}},
            {"label": PORTRAIT_ASSERTION, "data": {
                "style": facts.style, "created": facts.created, "order_reference": facts.order_reference,
                "base_model_id": facts.base_model_id,
            }},
        ],
    }


def png_with_xmp(pixels: np.ndarray, facts: PortraitFacts) -> bytes:
    """The portrait as PNG with the XMP packet in an iTXt chunk (before signing: the hash covers it)."""
    info = PngInfo()
    info.add_itxt(XMP_PNG_KEYWORD, xmp_packet(facts.style, facts.created), zip=False)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@dataclass
class _Chain:
    pem: str
    algorithm: str
    order_reference: str


@dataclass
class PortraitProvenance:
    vault: VaultClient
    base_model_id: str = ""
    _chains: dict[tuple[str, str], _Chain] = field(default_factory=dict)

    async def portrait_png(self, pixels: np.ndarray, job: events_pb2.RenderJob, item: events_pb2.RenderItem) -> bytes:
        """The delivered portrait: visible label (if the tenant turned it on), XMP, signed C2PA manifest."""
        chain = await self._prepare(job.tenant_id, job.order_id)
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        facts = PortraitFacts(item.style, created, chain.order_reference, self.base_model_id)
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._finish, pixels, job.visible_label, facts, chain, job.tenant_id, loop)

    def _finish(self, pixels: np.ndarray, label: common_pb2.VisibleLabel, facts: PortraitFacts, chain: _Chain,
                tenant_id: str, loop: asyncio.AbstractEventLoop) -> bytes:
        """Runs in a worker thread: the label, the PNG encoding and the signing all take CPU time."""
        labelled = draw_label(pixels, label) if label.enabled else pixels
        return self._sign(png_with_xmp(labelled, facts), facts, chain, tenant_id, loop)

    async def _prepare(self, tenant_id: str, order_id: str) -> _Chain:
        cached = self._chains.get((tenant_id, order_id))
        if cached is None:
            response = await self._vault_call(self.vault.stub.PrepareProvenance, privacy_pb2.PrepareProvenanceRequest(
                tenant_id=tenant_id, order_id=order_id,
            ))
            cached = _Chain(response.certificate_chain_pem, response.algorithm, response.order_reference)
            self._chains = {(tenant_id, order_id): cached}  # one order at a time per worker
        return cached

    def _sign(self, png: bytes, facts: PortraitFacts, chain: _Chain, tenant_id: str, loop) -> bytes:
        """Runs in a worker thread: c2pa calls back for the signature, which the vault makes."""
        failures: list[BaseException] = []

        def sign_in_vault(payload: bytes) -> bytes:
            request = privacy_pb2.SignProvenanceRequest(tenant_id=tenant_id, payload=payload)
            call = self._vault_call(self.vault.stub.SignProvenance, request)
            try:
                return asyncio.run_coroutine_threadsafe(call, loop).result(VAULT_TIMEOUT_S).signature
            except BaseException as error:
                failures.append(error)
                raise

        algorithm = ALGORITHMS.get(chain.algorithm)
        if algorithm is None:
            raise PermanentJobError(f"the vault's provenance key uses an unsupported algorithm {chain.algorithm!r}")
        signer = c2pa.Signer.from_callback(sign_in_vault, algorithm, chain.pem)
        context = c2pa.Context.from_dict(C2PA_SETTINGS)
        signed = io.BytesIO()
        try:
            with c2pa.Builder(manifest_definition(facts), context=context) as builder:
                builder.sign(signer, "image/png", io.BytesIO(png), signed)
        except c2pa.C2paError:
            if failures:
                raise failures[0] from None
            raise
        finally:
            signer.close()
            context.close()
        return signed.getvalue()

    async def _vault_call(self, method, request):
        try:
            return await method(request, metadata=self.vault.metadata, timeout=VAULT_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() in PERMANENT_VAULT_CODES:
                raise PermanentJobError(f"the vault refused to sign provenance: {error.details()}") from error
            raise

