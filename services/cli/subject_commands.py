"""A tenant's subjects over the public API: `studio subjects create|upload|get|list|export`
(`delete` and `revoke-consent` are in vault_commands.py: they end in a deletion certificate)."""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from studio.v1 import common_pb2
from tqdm import tqdm

from services.cli.arguments import whole_number
from services.cli.failures import fail
from services.cli.output_files import whole_file
from services.cli.photo_files import photos_in
from services.cli.tenant_api import as_dict, page_lines, page_options, tenant_command
from studio_client import StudioClient


async def _create(client: StudioClient, args) -> dict:
    consent = common_pb2.ConsentRecord(agreement_version=args.consent_agreement, retention_days=args.retention_days,
                                       scopes=[common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION])
    subject = await client.create_subject(args.external_ref, consent, args.idempotency_key)
    retention = subject.consent.retention_days
    return {"subject": as_dict(subject),
            "lines": [f"subject {subject.subject_id}: consent to agreement {subject.consent.agreement_version}, "
                      f"kept {retention} days" + (f", ref {subject.external_ref}" if subject.external_ref else "")]}


def _photos(args) -> list[tuple[Path, int]]:
    """The headshot first, then every reference: files, or the photos in a folder. Checked before any call."""
    chosen = [(Path(args.headshot), common_pb2.PHOTO_ROLE_HEADSHOT)] if args.headshot else []
    for given in map(Path, args.references):
        files = photos_in(given) if given.is_dir() else [given]
        chosen += [(path, common_pb2.PHOTO_ROLE_REFERENCE) for path in files
                   if not (args.headshot and path.resolve() == Path(args.headshot).resolve())]
    missing = [str(path) for path, _ in chosen if not path.is_file()]
    if missing:
        fail(f"no such photo: {', '.join(missing)}", args.json)
    if not chosen:
        fail("no photos to upload: give --headshot and/or --references", args.json)
    return chosen


async def _upload(client: StudioClient, args) -> dict:
    photos = _photos(args)
    with tqdm(total=sum(path.stat().st_size for path, _ in photos), unit="B", unit_scale=True, desc="upload",
              disable=args.json) as bar:
        uploaded = await client.upload_photos(args.subject_id, photos, on_bytes=bar.update)
    result = [as_dict(summary) for summary in uploaded.photos]
    verdict = as_dict(uploaded.set_verdict) if uploaded.set_verdict else {}
    accepted = sum(1 for s in uploaded.photos if s.verdict.accepted)
    lines = [f"{accepted} of {len(result)} photo(s) accepted" + (f"; {uploaded.resumed} were already uploaded"
                                                                  if uploaded.resumed else "")]
    lines += _photo_lines(uploaded.photos) + _set_lines(uploaded.set_verdict)
    return {"subject_id": args.subject_id, "photos": result, "set_verdict": verdict, "resumed": uploaded.resumed,
            "lines": lines}


async def _get(client: StudioClient, args) -> dict:
    subject = await client.get_subject(args.subject_id)
    consent = subject.consent
    lines = [f"subject {subject.subject_id}" + (f" (ref {subject.external_ref})" if subject.external_ref else ""),
             f"  consent: agreement {consent.agreement_version}, kept {consent.retention_days} days"]
    return {"subject": as_dict(subject),
            "lines": lines + _photo_lines(subject.photos) + _set_lines(subject.set_verdict)}


def _photo_lines(photos) -> list[str]:
    lines = []
    for photo in photos:
        role = "headshot" if photo.role == common_pb2.PHOTO_ROLE_HEADSHOT else "reference"
        verdict = photo.verdict
        why = "; ".join(verdict.messages or verdict.reasons)
        lines.append(f"  {photo.photo_id}  {photo.filename}  {role}  "
                     + ("accepted" if verdict.accepted else f"refused: {why}"))
    return lines


def _set_lines(verdict: common_pb2.SetVerdict | None) -> list[str]:
    if verdict is None or not verdict.ListFields():
        return []
    ready = "ready to order" if verdict.sufficient else "not enough to order yet"
    lines = [f"photo set: {ready}; {verdict.accepted_photos} accepted (minimum {verdict.min_accepted_photos}, "
             f"recommended {verdict.recommended_photos}), headshot "
             + ("accepted" if verdict.headshot_accepted else "missing")]
    return lines + [f"  {message}" for message in verdict.messages]


async def _list(client: StudioClient, args) -> dict:
    page = await client.list_subjects(args.page_size, args.page_token, external_ref=args.external_ref or "")
    subjects = [as_dict(subject) for subject in page.subjects]
    lines = [f"{s['subject_id']}  {s.get('created_at', '')}  {s.get('external_ref', '')}" for s in subjects]
    lines = lines or ["no subjects" + (f" with external ref {args.external_ref!r}" if args.external_ref else "")]
    return {"subjects": subjects, "next_page_token": page.next_page_token,
            "lines": page_lines(lines, page.next_page_token)}


async def _export(client: StudioClient, args) -> dict:
    """The archive holds the customer's photos in clear: written owner-only, and whole or not at all."""
    out = Path(args.out)
    with whole_file(out, args.json, private=True) as handle:
        with tqdm(unit="B", unit_scale=True, desc="export", disable=args.json) as bar:
            await client.export_subject(args.subject_id, handle, on_bytes=bar.update)
        handle.seek(0)
        with tarfile.open(fileobj=handle, mode="r:") as archive:
            names = archive.getnames()
    return {"subject_id": args.subject_id, "out": str(out.resolve()), "bytes": out.stat().st_size, "files": names,
            "lines": [f"{len(names)} files, {out.stat().st_size} bytes written to {out}"]}


def add_subject_commands(subjects: argparse._SubParsersAction) -> None:
    create = tenant_command(subjects, "create", "a new subject, with the customer's consent", _create)
    create.add_argument("--consent-agreement", required=True, metavar="VERSION",
                        help="the version of the consent agreement the customer accepted (portrait generation)")
    create.add_argument("--retention-days", type=whole_number(0, "the tenant's default"), default=0,
                        help="how long the photos may be kept (0: the tenant's default)")
    create.add_argument("--external-ref", default="", help="your own reference for the customer")
    create.add_argument("--idempotency-key", default="", help="the same key again returns the same subject")
    upload = tenant_command(subjects, "upload", "upload and check photos (an interrupted upload resumes)", _upload)
    upload.add_argument("subject_id")
    upload.add_argument("--references", nargs="+", action="extend", default=[], metavar="PHOTO",
                        help="reference photos: files, or folders of photos")
    upload.add_argument("--headshot", help="the frontal headshot")
    get = tenant_command(subjects, "get", "a subject: consent, photos and their verdicts", _get)
    get.add_argument("subject_id")
    listing = tenant_command(subjects, "list", "the tenant's subjects, newest first", _list)
    listing.add_argument("--external-ref")
    page_options(listing)
    export = tenant_command(subjects, "export", "everything held about a subject, as a tar archive", _export)
    export.add_argument("subject_id")
    export.add_argument("--out", required=True, help="archive file to write")
