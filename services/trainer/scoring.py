"""How validation renders are scored for identity, behind one interface validation.py uses.

Score of one image: 1 − embedding distance of its largest face to the subject's reference,
clipped to [0, 1]; an image without a detectable face scores 0. dlib's same-person distance is
about 0.5–0.6, so a score above ~0.45 reads as "the same person".

Two implementations: `InProcessScorer` (dlib in this process; `studio train` without servers)
and `FaceQAScorer` (services/trainer/faceqa_scoring.py: faceqa's ScoreIdentity over gRPC; the
trainer worker). A scorer that cannot score this time (faceqa unreachable) returns None and the
validation point is recorded as unscored (training.UNSCORED) rather than failing the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image


class IdentityScorer(Protocol):
    def score(self, images: Sequence[Image.Image]) -> list[float] | None:
        """Each image's score in [0, 1], in order; None when they could not be scored this time.
        Called on the training thread, never on an event loop."""


class InProcessScorer:
    """dlib in this process, against the training crops' embeddings (services/trainer/identity.py)."""

    def __init__(self, references: list[np.ndarray]) -> None:
        self.references = references

    @classmethod
    def from_crops(cls, crops: Sequence[Image.Image]) -> InProcessScorer:
        from services.trainer.identity import chip_embedding

        return cls([chip_embedding(crop) for crop in crops])

    def score(self, images: Sequence[Image.Image]) -> list[float] | None:
        from services.trainer.identity import identity_score

        if not self.references:
            return None
        return [identity_score(image, self.references) for image in images]
