"""Privacy commands: `studio subjects delete`, `studio certificate verify`, `studio audit verify|export`,
`studio keys rotate`.

Tenant commands go through the public API with the tenant's key; operator commands talk to the
vault as the `operator` identity (its token from the embedded stack's data dir, or mTLS). Checks of
certificates and audit exports run offline against the vault's public key."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from studio.v1 import privacy_pb2, privacy_pb2_grpc
from tqdm import tqdm

from services.cli.elapsed import counting_seconds
from services.cli.failures import fail, read_secret_line
from services.cli.output_files import whole_file
from services.cli.stack_file import stack_file_value
from services.cli.subject_commands import add_subject_commands
from services.cli.tenant_api import add_tenant_options, tenant_client
from services.common.audit_chain import ChainVerdict, ChainWalk, iter_export, verify_stream, verify_walks
from services.common.secrets import SERVICE_TOKEN_METADATA
from services.common.signatures import SignatureError, load_public_key, verify_certificate
from services.common.tls import TlsFiles, internal_channel

# The whole log streams in one call: a year of it takes minutes to fetch, not a key call's seconds.
EXPORT_TIMEOUT_S = 3600
EXPORT_BATCH = 500  # records per reply: one a reply streams a long log many times slower


def _public_key(args):
    path = Path(args.public_key) if args.public_key else Path(args.data) / "vault-signing.pub"
    if not path.exists():
        fail(f"no vault public key at {path} (give --public-key)", args.json)
    try:
        return load_public_key(path.read_bytes())
    except SignatureError as error:
        fail(f"{path}: {error}", args.json)


# --- studio subjects delete -------------------------------------------------------------------

async def _delete(args) -> dict:
    client = tenant_client(args)
    started = time.monotonic()
    try:
        erase = client.revoke_consent if args.revoke else client.delete_subject  # both end in the same deletion
        deletion = await erase(args.subject_id)
        result = {"deletion_id": deletion.deletion_id, "subject_id": args.subject_id,
                  "state": privacy_pb2.DeletionState.Name(deletion.state)}
        if args.wait:
            with tqdm(total=len(deletion.waiting_for) + len(deletion.confirmations), desc="purge confirmations",
                      disable=args.json) as bar:
                def progress(current) -> None:
                    bar.n = len(current.confirmations)
                    bar.refresh()

                deletion = await client.wait_for_certificate(deletion.deletion_id, args.timeout, progress)
            path = Path(args.out) / f"deletion-{deletion.deletion_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(deletion.certificate)
            result.update(state="DELETION_STATE_CERTIFIED", certificate=str(path.resolve()),
                          confirmations={c.service: dict(c.destroyed) for c in deletion.confirmations})
        result["seconds"] = round(time.monotonic() - started, 2)
        return result
    finally:
        await client.close()


def cmd_subjects_delete(args) -> None:
    try:
        result = asyncio.run(_delete(args))
    except TimeoutError as error:
        fail(str(error), args.json)
    if args.json:
        print(json.dumps(result))
        return
    print(f"deletion {result['deletion_id']}: {result['state']} ({result['seconds']} s)")
    if "certificate" in result:
        for service, destroyed in result["confirmations"].items():
            print(f"  {service}: " + ", ".join(f"{kind} {count}" for kind, count in sorted(destroyed.items())))
        print(f"certificate: {result['certificate']}")


# --- studio certificate verify ----------------------------------------------------------------

def cmd_certificate_verify(args) -> None:
    try:
        document = json.loads(Path(args.file).read_bytes())
        verify_certificate(document, _public_key(args))
    except (OSError, ValueError, SignatureError) as error:
        fail(f"certificate {args.file} is NOT valid: {error}", args.json)
    summary = {key: document.get(key) for key in ("deletion_id", "subject_id", "reason", "issued_at", "key_id")}
    summary["services"] = [entry["service"] for entry in document.get("destroyed", [])]
    if args.json:
        print(json.dumps({"ok": True, **summary}))
    else:
        print(f"valid deletion certificate {summary['deletion_id']} for subject {summary['subject_id']}")
        print(f"  reason {summary['reason']}, issued {summary['issued_at']}, signed by {summary['key_id']}")
        print(f"  purged by: {', '.join(summary['services'])}")


# --- operator commands (vault) ----------------------------------------------------------------

def _vault_stub(args):
    data = Path(args.data)
    address = args.privacy_addr or stack_file_value(data, args.json, "services", "privacy")
    if not address:
        fail(f"no running stack in {data} (give --privacy-addr)", args.json)
    metadata = _operator_token(args, data)
    channel = internal_channel(address, _tls_identity(args), server_name=args.tls_server_name)
    return channel, privacy_pb2_grpc.PrivacyStub(channel), metadata


def _tls_identity(args) -> TlsFiles | None:
    """--tls-identity DIR (cert-manager's tls.crt, tls.key, ca.crt) instead of STUDIO_TLS_*; None: the environment."""
    if not args.tls_identity:
        return None
    folder = Path(args.tls_identity)
    tls = TlsFiles(folder / "tls.crt", folder / "tls.key", folder / "ca.crt")
    missing = [path.name for path in (tls.cert, tls.key, tls.ca) if not path.is_file()]
    if missing:
        fail(f"--tls-identity {folder} lacks {', '.join(missing)}", args.json)
    return tls


def _operator_token(args, data: Path) -> tuple[tuple[str, str], ...]:
    """The operator token's call metadata; none where the default file is absent (mTLS names the operator)."""
    token_file = Path(args.token_file) if args.token_file else data / "secrets" / "operator.token"
    if token_file.exists():
        return ((SERVICE_TOKEN_METADATA, read_secret_line(token_file, "operator token", args.json)),)
    if args.token_file:  # asked for by name: calling without it would only be refused as someone else
        fail(f"no operator token at {token_file} (give --token-file)", args.json)
    return ()


async def _fetch_records(args, take: Callable[[dict], object]) -> int:
    """Stream the vault's export record by record into `take` (nothing held: any length, constant memory)."""
    channel, stub, metadata = _vault_stub(args)
    try:
        with tqdm(desc="fetching audit records", unit=" records", disable=args.json, file=sys.stderr,
                  leave=False) as bar:
            count, request = 0, privacy_pb2.ExportAuditRequest(batch=EXPORT_BATCH)
            async for reply in stub.ExportAudit(request, metadata=metadata, timeout=EXPORT_TIMEOUT_S):
                lines = reply.records or [reply.json]  # a vault older than batches sends one record a reply
                for line in lines:
                    take(json.loads(line))
                count += len(lines)
                bar.update(len(lines))
            return count
    finally:
        await channel.close()


def _line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


class _RecordsDocument:
    """{"records": [...]} written a record at a time: the same bytes as json.dumps of the whole document."""

    def __init__(self, out: TextIO) -> None:
        self._out, self._count = out, 0

    def add(self, record: dict) -> None:
        self._out.write(('{"records": [' if not self._count else ", ") + json.dumps(record, sort_keys=True))
        self._count += 1

    def close(self) -> None:
        self._out.write(("]}" if self._count else '{"records": []}') + "\n")


def cmd_audit_export(args) -> None:
    if args.out:
        with whole_file(Path(args.out), args.json) as handle:
            count = asyncio.run(_fetch_records(args, lambda record: handle.write(_line(record).encode())))
        print(json.dumps({"out": args.out, "records": count}) if args.json
              else f"{count} audit records written to {args.out}")
    elif args.json:
        document = _RecordsDocument(sys.stdout)
        asyncio.run(_fetch_records(args, document.add))
        document.close()
    else:
        asyncio.run(_fetch_records(args, lambda record: sys.stdout.write(_line(record))))


def _export_records(lines: Iterable[str], name: object) -> Iterator[dict]:
    """An export's records as read; a file of JSON that is not one object per line is no audit export."""
    try:
        for number, record in enumerate(iter_export(lines), 1):
            if not isinstance(record, dict):
                raise ValueError(f"{name} is not an audit export: record {number} is not a JSON object")
            yield record
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not an audit export: it is not text") from None


def _verify_export(handle: TextIO, name: object, key) -> ChainVerdict:
    """Read as a stream, once (twice for an export from an older vault, which put every checkpoint last)."""
    def records() -> Iterator[dict]:
        handle.seek(0)
        return _export_records(handle, name)

    verdict = verify_stream(records, key)
    if not verdict.ok:  # a file that is no export at all says so, rather than where its "chain" breaks
        collections.deque(records(), maxlen=0)
    return verdict


def _verify_from_vault(args, key) -> ChainVerdict:
    """Checked as it streams in: constant memory, nothing written (in the privacy pod, /tmp is small). A vault
    older than streamed exports puts every checkpoint last: those are checked on a second fetch."""
    def run(walk: ChainWalk) -> ChainVerdict:
        asyncio.run(_fetch_records(args, walk.feed))
        return walk.verdict()

    return verify_walks(run, key)


def cmd_audit_verify(args) -> None:
    try:
        if args.file:
            with open(args.file, encoding="utf-8") as handle:
                verdict = _verify_export(handle, args.file, _public_key(args))
        else:
            verdict = _verify_from_vault(args, _public_key(args))
    except (OSError, ValueError) as error:
        fail(str(error), args.json)
    if args.json:
        print(json.dumps(verdict.as_dict()))
    elif verdict.ok:
        print(f"audit log intact: {verdict.entries} entries, {verdict.checkpoints} signed checkpoints")
    else:
        print(f"audit log BROKEN at entry {verdict.first_broken_seq}: {verdict.reason}")
    if not verdict.ok:
        sys.exit(1)


async def _rotate(args) -> privacy_pb2.RotateKekResponse:
    channel, stub, metadata = _vault_stub(args)
    try:
        async with counting_seconds("rotating the master key, rewrapping every data key", quiet=args.json):
            return await stub.RotateKek(privacy_pb2.RotateKekRequest(), metadata=metadata, timeout=600)
    finally:
        await channel.close()


def cmd_keys_rotate(args) -> None:
    response = asyncio.run(_rotate(args))
    result = {"new_version": response.new_version, "keys_rewrapped": response.keys_rewrapped,
              "retired_versions": list(response.retired_versions)}
    print(json.dumps(result) if args.json else
          f"master key version {result['new_version']} is current; {result['keys_rewrapped']} data keys rewrapped; "
          f"retired versions: {result['retired_versions'] or 'none'}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    subjects = commands.add_parser("subjects", help="data subjects").add_subparsers(dest="subjects_command",
                                                                                   required=True)
    for name, help_text, revoke in (
        ("delete", "delete a subject and (with --wait) get its certificate", False),
        ("revoke-consent", "the customer withdrew consent: record it, then delete as `delete` does", True),
    ):
        delete = subjects.add_parser(name, help=help_text)
        delete.add_argument("subject_id")
        delete.add_argument("--wait", action="store_true", help="wait for the signed deletion certificate")
        delete.add_argument("--timeout", type=float, default=120.0)
        delete.add_argument("--out", default="certificates", help="folder for the certificate")
        add_tenant_options(delete)
        delete.set_defaults(func=cmd_subjects_delete, revoke=revoke)
    add_subject_commands(subjects)

    certificate = commands.add_parser("certificate").add_subparsers(dest="certificate_command", required=True)
    verify = certificate.add_parser("verify", help="check a deletion certificate offline")
    verify.add_argument("file")
    _key_options(verify)
    verify.set_defaults(func=cmd_certificate_verify)

    audit = commands.add_parser("audit", help="the vault's audit log").add_subparsers(dest="audit_command",
                                                                                     required=True)
    audit_verify = audit.add_parser("verify", help="check the hash chain and signed checkpoints")
    audit_verify.add_argument("--file", help="an export to check offline (default: fetch from the vault)")
    _key_options(audit_verify)
    _operator_options(audit_verify, with_data=False)
    audit_verify.set_defaults(func=cmd_audit_verify)
    export = audit.add_parser("export", help="write the audit log as JSON lines")
    export.add_argument("--out", help='file (default: stdout; with --json, one document {"records": [...]})')
    _operator_options(export)
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_audit_export)

    keys = commands.add_parser("keys", help="master key").add_subparsers(dest="keys_command", required=True)
    rotate = keys.add_parser("rotate", help="new master key version; rewrap every data key; retire the old")
    _operator_options(rotate)
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=cmd_keys_rotate)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-key", help="the vault's public key PEM (default: DATA/vault-signing.pub)")
    parser.add_argument("--data", default="data")
    parser.add_argument("--json", action="store_true")


def _operator_options(parser: argparse.ArgumentParser, with_data: bool = True) -> None:
    if with_data:  # _key_options has added --data already where both are used
        parser.add_argument("--data", default="data", help="the embedded stack's data dir")
    parser.add_argument("--privacy-addr", help="the vault's address (default: from DATA/stack.json)")
    parser.add_argument("--token-file", help="operator token (default: DATA/secrets/operator.token)")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="verify the vault's certificate against NAME (e.g. `privacy` when --privacy-addr is "
                             "127.0.0.1)")
    parser.add_argument("--tls-identity", metavar="DIR", help="mTLS identity: DIR/tls.crt, tls.key, ca.crt "
                        "(default: STUDIO_TLS_* environment)")
