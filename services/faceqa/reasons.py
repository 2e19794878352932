"""Reason codes a photo check can return, with the message shown to the customer for each."""

UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
UNREADABLE = "UNREADABLE"
TOO_LARGE = "TOO_LARGE"
NO_FACE = "NO_FACE"
MULTIPLE_FACES = "MULTIPLE_FACES"

REASON_MESSAGES: dict[str, str] = {
    UNSUPPORTED_FORMAT: "This file type is not supported. Upload a JPEG, PNG or WebP photo.",
    UNREADABLE: "We could not read this photo; the file may be damaged or incomplete. "
    "Upload it again or choose another photo.",
    TOO_LARGE: "This photo is too large. Upload a smaller copy, at most 8000 pixels on either side "
    "and 40 megapixels in total.",
    NO_FACE: "We could not find a face. Upload a photo where your face is clearly visible.",
    MULTIPLE_FACES: "We found more than one face. Upload a photo with only you in it.",
}


def message_for(reason: str) -> str:
    """The customer-facing message for a reason code."""
    return REASON_MESSAGES[reason]
