"""Candidates and identity ranking: render more candidates than ordered, score each against the
subject through faceqa's ScoreIdentity, drop those with no face or someone else's face, keep the best.

Two ranking modes (STUDIO_RENDER_RANKING):
- `identity` (the default; production): candidate_factor × N candidates per style, each scored; no
  face or the wrong face is dropped; the top N by score are delivered with their scores. A style
  where fewer survive delivers fewer; an order where none survive fails ("rendering": no likeness).
  faceqa down: the job waits and tries again, like a Triton outage.
- `unscored`: N candidates per style, delivered as rendered with identity_score = -1 (UNSCORED).
  For base models that cannot draw a face: the tiny random-weight model of tests and `studio demo`
  renders noise, which identity ranking would always drop. The embedded stack picks this mode when it
  runs the tiny model; a real base model gets `identity`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from prometheus_client import Counter

from services.common.identity_scoring import IMAGE_SIDE, IdentityClient, encode_for_scoring, score_from_distance

log = logging.getLogger(__name__)
CANDIDATES = Counter("studio_renderer_candidates_total", "Ranked render candidates by outcome", ["outcome"])

RANKING_ENV = "STUDIO_RENDER_RANKING"
CANDIDATE_FACTOR_ENV = "STUDIO_RENDER_CANDIDATE_FACTOR"
CONCURRENCY_ENV = "STUDIO_RENDER_CONCURRENCY"
IDENTITY, UNSCORED_MODE = "identity", "unscored"
RANKING_MODES = (IDENTITY, UNSCORED_MODE)
DEFAULT_CANDIDATE_FACTOR = 2.0
MAX_CANDIDATE_FACTOR = 8.0
# Unset: Triton's batches in flight per job (max_batch_size each), so a lone job fills Triton's batches and its
# next batch waits in Triton's queue while one renders (services/renderer/worker.py in_flight).
BATCHES_IN_FLIGHT = 2
FALLBACK_CONCURRENCY = 16  # when Triton cannot say its max_batch_size: twice the model repository's 8
UNSCORED = -1.0
SCORE_CHUNK = 16  # images per ScoreIdentity call: well under faceqa's per-call and message limits
FACEQA_RETRY_S = 5.0
SEED_STRIDE = 1_000_003  # candidate k of an item: the item's seed + k × stride (mod 2^31)


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class RankingSettings:
    mode: str = IDENTITY
    candidate_factor: float = DEFAULT_CANDIDATE_FACTOR
    concurrency: int | None = None  # Triton requests in flight per job; None: BATCHES_IN_FLIGHT batches

    def __post_init__(self) -> None:
        if self.mode not in RANKING_MODES:
            raise SettingsError(f"{RANKING_ENV} must be one of {', '.join(RANKING_MODES)}, got '{self.mode}'")
        if not 1.0 <= self.candidate_factor <= MAX_CANDIDATE_FACTOR:
            raise SettingsError(
                f"{CANDIDATE_FACTOR_ENV} must be 1..{MAX_CANDIDATE_FACTOR}, got {self.candidate_factor}")
        if self.concurrency is not None and self.concurrency < 1:
            raise SettingsError(f"{CONCURRENCY_ENV} must be at least 1, got {self.concurrency}")

    @classmethod
    def from_env(cls) -> RankingSettings:
        return cls(
            mode=os.environ.get(RANKING_ENV) or IDENTITY,
            candidate_factor=float(os.environ.get(CANDIDATE_FACTOR_ENV) or DEFAULT_CANDIDATE_FACTOR),
            concurrency=int(os.environ[CONCURRENCY_ENV]) if os.environ.get(CONCURRENCY_ENV) else None,
        )

    @property
    def scored(self) -> bool:
        return self.mode == IDENTITY

    def candidates_for(self, count: int) -> int:
        return max(count, math.ceil(count * self.candidate_factor)) if self.scored else count


@dataclass
class Candidate:
    seed: int
    image: np.ndarray  # uint8 HxWx3
    score: float = UNSCORED


def candidate_seeds(item_seeds: list[int], total: int) -> list[int]:
    """`total` distinct seeds: the ordered items' own first, then ones derived from them."""
    seeds = list(item_seeds[:total])
    k = 1
    while len(seeds) < total:
        for base in item_seeds:
            seed = (base + k * SEED_STRIDE) % 2**31
            if seed not in seeds and len(seeds) < total:
                seeds.append(seed)
        k += 1
    return seeds


def candidate_seeds_left(item_seeds: list[int], total: int, delivered: set[int]) -> list[int]:
    """A style's candidates as its job first drew them (candidate_seeds of all its items), less the seeds of the
    portraits delivered before the job was cut short. The job run again then delivers what it would have delivered
    uninterrupted: drawn from only the items left, the candidates would overlap the first draw, and its best, which
    was delivered already, would win again."""
    return [seed for seed in candidate_seeds(item_seeds, total) if seed not in delivered]


class RankingStopped(Exception):
    """The job stopped (its order cancelled, its subject deleted) while ranking waited for faceqa."""


async def identity_scores(identity: IdentityClient, candidates: list[Candidate],
                          stopped: Callable[[], bool] = lambda: False) -> list[float | None]:
    """Each candidate's score (1 − distance to the subject), None where faceqa found no face or
    someone else's. faceqa unreachable: waits and tries again, until `stopped()` (RankingStopped)."""
    encoded = await asyncio.to_thread(lambda: [encode_for_scoring(Image.fromarray(c.image), IMAGE_SIDE)
                                               for c in candidates])  # resizing and JPEG: off the event loop
    scores: list[float | None] = []
    for start in range(0, len(encoded), SCORE_CHUNK):
        chunk = encoded[start : start + SCORE_CHUNK]
        while (response := await identity.score_encoded(chunk)) is None:
            if stopped():
                raise RankingStopped
            log.warning("faceqa unreachable; ranking waits %.0f s and tries again", FACEQA_RETRY_S)
            await asyncio.sleep(FACEQA_RETRY_S)
        scores += [score_from_distance(s.distance) if s.face_found and s.same_person else None
                   for s in response.scores]
    return scores


async def rank(identity: IdentityClient, candidates: list[Candidate], keep: int,
               stopped: Callable[[], bool] = lambda: False) -> list[Candidate]:
    """The best `keep` candidates showing the subject, best first, with their scores; candidates with
    no face or a stranger's face are dropped."""
    likenesses = []
    for candidate, score in zip(candidates, await identity_scores(identity, candidates, stopped), strict=True):
        if score is not None:
            candidate.score = score
            likenesses.append(candidate)
    dropped = len(candidates) - len(likenesses)
    if dropped:
        log.info("ranking dropped %d of %d candidates (no face or not the subject)", dropped, len(candidates))
    kept = sorted(likenesses, key=lambda c: c.score, reverse=True)[:keep]
    CANDIDATES.labels("dropped").inc(dropped)
    CANDIDATES.labels("delivered").inc(len(kept))
    CANDIDATES.labels("outranked").inc(len(likenesses) - len(kept))
    return kept
