"""Ranking settings and candidate seeds (the scoring itself is tested against a real faceqa in
tests/test_render_ranking.py)."""

from __future__ import annotations

import pytest

from services.renderer.ranking import RankingSettings, SettingsError, candidate_seeds


def test_identity_mode_renders_factor_times_more_candidates_unscored_mode_exactly_the_order() -> None:
    assert RankingSettings(candidate_factor=2.0).candidates_for(3) == 6
    assert RankingSettings(candidate_factor=1.5).candidates_for(3) == 5
    assert RankingSettings(mode="unscored", candidate_factor=3.0).candidates_for(3) == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"mode": "best-effort"}, "STUDIO_RENDER_RANKING must be one of identity, unscored"),
     ({"candidate_factor": 0.5}, "STUDIO_RENDER_CANDIDATE_FACTOR must be 1..8"),
     ({"concurrency": 0}, "STUDIO_RENDER_CONCURRENCY must be at least 1")],
)
def test_bad_settings_are_refused_by_name(settings: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        RankingSettings(**settings)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_RENDER_RANKING", "unscored")
    monkeypatch.setenv("STUDIO_RENDER_CANDIDATE_FACTOR", "3")
    monkeypatch.setenv("STUDIO_RENDER_CONCURRENCY", "2")
    assert RankingSettings.from_env() == RankingSettings("unscored", 3.0, 2)


def test_candidate_seeds_keep_the_items_seeds_first_and_are_distinct_and_stable() -> None:
    seeds = candidate_seeds([5, 2**31 - 1], 5)
    assert seeds[:2] == [5, 2**31 - 1] and len(set(seeds)) == 5 and all(0 <= s < 2**31 for s in seeds)
    assert candidate_seeds([5, 2**31 - 1], 5) == seeds
    assert candidate_seeds([9], 1) == [9]


def test_requests_in_flight_follow_triton_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDIO_RENDER_CONCURRENCY", raising=False)
    assert RankingSettings.from_env().concurrency is None  # the worker asks Triton (worker.in_flight)
