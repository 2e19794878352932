"""`studio provenance verify FILE [--json]`: is this portrait what the studio signed?

Outcomes: verified (signature valid, certificate chain trusted, pixels match the hard binding);
not_matching (signature or hash binding fails, or the C2PA manifest is gone while the file's XMP
still says it is a studio portrait: re-encoded or cropped); untrusted (intact, but signed under a
certificate the chosen trust anchor does not vouch for); unlabelled (no manifest, no studio XMP);
unsupported (not an image format that can carry a manifest). Every outcome but verified exits non-zero."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.cli.failures import fail
from services.common.provenance import (
    ACTIONS_ASSERTION,
    PORTRAIT_ASSERTION,
    TRAINING_MINING_ASSERTION,
    XMP_PNG_KEYWORD,
    xmp_digital_source_type,
)

VERIFIED, NOT_MATCHING, UNTRUSTED, UNLABELLED = "verified", "not_matching", "untrusted", "unlabelled"
UNSUPPORTED = "unsupported"
EXIT_CODES = {VERIFIED: 0, NOT_MATCHING: 1, UNTRUSTED: 2, UNLABELLED: 3, UNSUPPORTED: 4}
DEV_ROOT = "provenance-root.pem"
# Failure codes that mean the bytes are not the ones signed (as opposed to a trust problem).
_BINDING_FAILURE = re.compile(r"(dataHash|boxesHash|bmffHash|hashedURI)\.mismatch|claimSignature\.mismatch|"
                              r"assertion\.(missing|dataHash)|manifest\.(inaccessible|missing)")


@dataclass
class Verification:
    file: str
    outcome: str
    summary: str
    trust_anchor: str | None = None
    trust_source: str = ""
    problems: list[dict] = field(default_factory=list)
    assertions: dict = field(default_factory=dict)
    signer: dict = field(default_factory=dict)
    xmp_digital_source_type: str | None = None


def _trust_anchor(args) -> tuple[Path | None, str]:
    if args.trust_anchor:
        return Path(args.trust_anchor), "--trust-anchor"
    default = Path(args.data) / DEV_ROOT
    if default.exists():
        return default, f"the embedded stack's development root ({args.data})"
    return None, "none: no --trust-anchor and no development root found"


def _xmp_of(data: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            xmp = image.info.get(XMP_PNG_KEYWORD) or image.info.get("xmp")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return xmp.decode(errors="replace") if isinstance(xmp, bytes) else xmp


def _assertions(manifest: dict) -> dict:
    found = {a.get("label"): a.get("data", {}) for a in manifest.get("assertions", [])}
    created = next(iter(found.get(ACTIONS_ASSERTION, {}).get("actions", [])), {})
    portrait = found.get(PORTRAIT_ASSERTION, {})
    mining = found.get(TRAINING_MINING_ASSERTION, {}).get("entries", {})
    return {
        "digital_source_type": created.get("digitalSourceType"), "action": created.get("action"),
        "generator": manifest.get("claim_generator_info", []), "style": portrait.get("style"),
        "created": portrait.get("created") or created.get("when"), "order_reference": portrait.get("order_reference"),
        "base_model_id": portrait.get("base_model_id"),
        "training_mining": {use: entry.get("use") for use, entry in mining.items()},
    }


class UnsupportedFile(ValueError):
    """Not an image format that can carry a C2PA manifest."""


class BadTrustAnchor(ValueError):
    """The --trust-anchor file is not PEM certificates c2pa can trust."""


def _context(anchor: Path | None):
    """A c2pa Context that verifies trust against ANCHOR's certificates (no trust check without one)."""
    import c2pa

    settings = {"verify": {"verify_trust": anchor is not None}}
    try:
        if anchor is not None:
            settings["trust"] = {"trust_anchors": anchor.read_text()}
        return c2pa.Context.from_dict(settings)
    except (c2pa.C2paError, UnicodeDecodeError) as error:
        raise BadTrustAnchor(f"bad trust anchor {anchor}: not PEM certificates ({error})") from None


def _read_manifest(data: bytes, anchor: Path | None):
    """(manifest store as JSON, validation state) or None when the file carries no manifest."""
    import c2pa

    with _context(anchor) as context:
        try:
            with c2pa.Reader(io.BytesIO(data), context=context) as reader:
                return json.loads(reader.json()), reader.get_validation_state()
        except c2pa.C2paError.ManifestNotFound:
            return None
        except c2pa.C2paError.NotSupported as error:
            raise UnsupportedFile(str(error)) from None
        except c2pa.C2paError as error:  # a manifest so damaged it cannot be parsed
            return {"validation_status": [{"code": "manifest.unreadable", "explanation": str(error)}]}, "Invalid"


def verify(path: Path, anchor: Path | None, trust_source: str) -> Verification:
    data = path.read_bytes()
    result = Verification(str(path), UNLABELLED, "", str(anchor) if anchor else None, trust_source)
    xmp = _xmp_of(data)
    result.xmp_digital_source_type = xmp_digital_source_type(xmp) if xmp else None
    try:
        read = _read_manifest(data, anchor)
    except UnsupportedFile:
        result.outcome, result.summary = UNSUPPORTED, "not an image format that can carry a C2PA manifest"
        return result
    if read is None:
        if result.xmp_digital_source_type:
            result.outcome = NOT_MATCHING
            result.summary = ("no C2PA manifest, but the XMP says this is an AI-generated studio portrait: "
                              "the manifest was stripped or lost when the file was re-encoded")
        else:
            result.summary = "no C2PA manifest: this file carries no provenance label"
        return result
    store, state = read
    manifest = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    result.assertions = _assertions(manifest)
    result.signer = manifest.get("signature_info", {})
    result.problems = [
        {"code": s.get("code"), "explanation": s.get("explanation")} for s in store.get("validation_status", [])
    ]
    binding = [p for p in result.problems if _BINDING_FAILURE.search(p["code"] or "")]
    if binding or state == "Invalid":
        result.outcome = NOT_MATCHING
        result.summary = "the file does not match its manifest: " + "; ".join(
            p["code"] for p in (binding or result.problems)
        )
    elif state == "Trusted":
        result.outcome, result.summary = VERIFIED, "signature valid, signer trusted, pixels match the hard binding"
    else:
        result.outcome = UNTRUSTED
        result.summary = "intact and validly signed, but the signing certificate is not trusted by " + (
            str(anchor) if anchor else "any trust anchor (pass --trust-anchor PEM)"
        )
    return result


def _print_text(result: Verification) -> None:
    print(f"{result.outcome.upper()}: {result.summary}")
    print(f"trust anchor: {result.trust_anchor or '-'} ({result.trust_source})")
    if result.signer:
        print(f"signed by: {result.signer.get('common_name')} ({result.signer.get('issuer')})")
    shown = result.assertions if any(result.assertions.values()) else {}
    for name, value in shown.items():
        print(f"  {name}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    for problem in result.problems:
        print(f"  ! {problem['code']}: {problem['explanation']}")


def cmd_verify(args) -> None:
    path = Path(args.file)
    if not path.is_file():
        fail(f"no such file: {path}", args.json)
    anchor, source = _trust_anchor(args)
    if anchor is not None and not anchor.is_file():
        fail(f"trust anchor not found: {anchor}", args.json)
    try:
        result = verify(path, anchor, source)
    except BadTrustAnchor as error:
        fail(str(error), args.json)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        _print_text(result)
    sys.exit(EXIT_CODES[result.outcome])


def register(commands: argparse._SubParsersAction) -> None:
    provenance = commands.add_parser("provenance", help="C2PA provenance of delivered portraits")
    actions = provenance.add_subparsers(dest="provenance_command", required=True)
    check = actions.add_parser("verify", help="check a portrait's C2PA manifest, signature and hard binding")
    check.add_argument("file")
    check.add_argument("--trust-anchor", help="PEM root certificate(s) to trust (default: DATA/provenance-root.pem)")
    check.add_argument("--data", default="data", help="embedded stack state directory (default ./data)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_verify)
