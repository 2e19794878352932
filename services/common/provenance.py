"""What a portrait's provenance says, shared by the renderer (which writes it) and
`studio provenance verify` (which reads it): the C2PA assertion labels, the IPTC digital source
type, and the plain XMP packet for viewers without C2PA."""

from __future__ import annotations

import re
from importlib import metadata
from xml.sax.saxutils import escape

GENERATOR_NAME = "Portrait Studio"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ACTIONS_ASSERTION = "c2pa.actions.v2"
TRAINING_MINING_ASSERTION = "c2pa.training-mining"
PORTRAIT_ASSERTION = "com.portrait-studio.portrait"
# Every use the C2PA training-and-mining assertion knows, refused.
TRAINING_MINING_USES = ("c2pa.ai_training", "c2pa.ai_generative_training", "c2pa.ai_inference", "c2pa.data_mining")
XMP_PNG_KEYWORD = "XML:com.adobe.xmp"
AI_CREDIT = "AI-generated portrait by Portrait Studio"


def generator_version() -> str:
    try:
        return metadata.version("portrait-studio")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def xmp_packet(style: str, created: str) -> str:
    """IPTC/XMP 'AI-generated' fields: the digital source type, a description and a credit line."""
    description = escape(f"{AI_CREDIT}; style {style}; created {created}")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        f' Iptc4xmpExt:DigitalSourceType="{TRAINED_ALGORITHMIC_MEDIA}"'
        f' photoshop:Credit="{escape(AI_CREDIT)}" xmp:CreatorTool="{GENERATOR_NAME} {generator_version()}"'
        f' xmp:CreateDate="{escape(created)}">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    )


def xmp_digital_source_type(xmp: str) -> str | None:
    found = re.search(r'Iptc4xmpExt:DigitalSourceType="([^"]+)"', xmp)
    return found.group(1) if found else None
