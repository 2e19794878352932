"""Reason codes a photo check can return, with the message shown to the customer for each, and
notes: things worth telling the customer about an accepted photo."""

from services.faceqa.thresholds import DEFAULTS

UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
UNREADABLE = "UNREADABLE"
TOO_LARGE = "TOO_LARGE"
NO_FACE = "NO_FACE"
MULTIPLE_FACES = "MULTIPLE_FACES"
FACE_TOO_SMALL = "FACE_TOO_SMALL"
FACE_CUT_OFF = "FACE_CUT_OFF"
BLURRY = "BLURRY"
UNDEREXPOSED = "UNDEREXPOSED"
OVEREXPOSED = "OVEREXPOSED"
NOT_FRONTAL = "NOT_FRONTAL"
IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
DUPLICATE = "DUPLICATE"

# Notes on accepted photos.
BACKGROUND_FACES = "BACKGROUND_FACES"
OLD_PHOTO = "OLD_PHOTO"

REASON_MESSAGES: dict[str, str] = {
    UNSUPPORTED_FORMAT: "This file type is not supported. Upload a JPEG, PNG, WebP or HEIC photo.",
    UNREADABLE: "We could not read this photo; the file may be damaged or incomplete. "
    "Upload it again or choose another photo.",
    TOO_LARGE: f"This photo is too large. Upload a smaller copy, at most {DEFAULTS.max_side_px} pixels on either "
    f"side and {DEFAULTS.max_pixels // 1_000_000} megapixels in total.",
    NO_FACE: "We could not find a face. Upload a photo where your face is clearly visible and upright.",
    MULTIPLE_FACES: "We found more than one face. Upload a photo with only you in it.",
    FACE_TOO_SMALL: "Your face is too small in this photo. Move closer or upload a larger, uncropped original.",
    FACE_CUT_OFF: "Your face is cut off by the edge of this photo. Upload a photo that shows your whole face, "
    "with some space around your head.",
    BLURRY: "This photo is blurry. Upload a sharp photo: hold the camera steady and focus on your face.",
    UNDEREXPOSED: "This photo is too dark. Upload a photo taken in better light.",
    OVEREXPOSED: "This photo is too bright; parts of your face are washed out. "
    "Avoid direct flash or strong sunlight on your face.",
    NOT_FRONTAL: "Your headshot must face the camera straight on. "
    "Upload a photo looking directly at the camera, head upright.",
    IDENTITY_MISMATCH: "This looks like a different person from your headshot. "
    "Upload only photos of yourself.",
    DUPLICATE: "This photo is the same as (or almost the same as) another photo in your set. "
    "Upload a different photo.",
}

NOTE_MESSAGES: dict[str, str] = {
    BACKGROUND_FACES: "Accepted: other people in the background were ignored; only the main face is used.",
    OLD_PHOTO: "Accepted, but this photo was taken a long time ago. Portraits look most like you today "
    "when your photos are recent: add some taken in the last few years.",
}


def message_for(reason: str) -> str:
    """The customer-facing message for a reason code or a note."""
    return REASON_MESSAGES.get(reason) or NOTE_MESSAGES[reason]
