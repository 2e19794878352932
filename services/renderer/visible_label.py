"""The tenant's visible "AI-generated" label, drawn into a corner of the delivered portrait."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from studio.v1 import common_pb2

DEFAULT_TEXT = "AI-generated"
MAX_TEXT_CHARS = 64
Corner = common_pb2.LabelCorner


def draw_label(pixels: np.ndarray, label: common_pb2.VisibleLabel) -> np.ndarray:
    """White text on a dark box, sized to the portrait (about 1/24 of its height, at least 8 px)."""
    image = Image.fromarray(pixels, mode="RGB")
    text = (label.text or DEFAULT_TEXT)[:MAX_TEXT_CHARS]
    font = ImageFont.load_default(size=max(8, image.height // 24))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, image.height // 100)
    box_w, box_h = right - left + 2 * margin, bottom - top + 2 * margin
    x, y = _origin(label.corner, image.width, image.height, box_w, box_h)
    draw.rectangle((x, y, x + box_w - 1, y + box_h - 1), fill=(20, 20, 20))
    draw.text((x + margin - left, y + margin - top), text, font=font, fill=(255, 255, 255))
    return np.asarray(image)


def _origin(corner: int, width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    right_x, bottom_y = max(0, width - box_w), max(0, height - box_h)
    return {
        Corner.LABEL_CORNER_TOP_LEFT: (0, 0),
        Corner.LABEL_CORNER_TOP_RIGHT: (right_x, 0),
        Corner.LABEL_CORNER_BOTTOM_LEFT: (0, bottom_y),
    }.get(corner, (right_x, bottom_y))
