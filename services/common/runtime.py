"""What a data-handling service opens on start: the bus, the vault client, the sealed store."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.blobstore import open_blob_store
from services.common.bus import Bus
from services.common.config import Settings
from services.common.tls import TlsFiles
from services.common.vault_client import SealedStore, VaultClient
from services.common.write_leases import WriteLeases


@dataclass
class Runtime:
    bus: Bus | None
    vault: VaultClient
    sealed: SealedStore

    @classmethod
    async def open(cls, settings: Settings, *, with_bus: bool = True) -> Runtime:
        # Under mTLS the certificate names the service; otherwise its token file does.
        token_file = settings.service_token_file if TlsFiles.from_env() else settings.require("service_token_file")
        token = token_file.read_text().strip() if token_file else ""
        vault = VaultClient(settings.require("privacy_addr"), token)
        bus = await Bus.connect(settings.require("nats_url"), name=settings.service_name) if with_bus else None
        blobs = await open_blob_store(settings.require("blob_url"))
        sealed = SealedStore(blobs, vault, bus.guard, WriteLeases(bus)) if bus else SealedStore(blobs, vault)
        return cls(bus=bus, vault=vault, sealed=sealed)

    async def close(self) -> None:
        if self.bus:
            await self.bus.close()
        await self.vault.close()
