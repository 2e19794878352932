"""Ranking settings and candidate seeds (the scoring itself is tested against a real faceqa in
tests/test_render_ranking.py)."""

from __future__ import annotations

import pytest

from services.renderer.ranking import RankingSettings, SettingsError, candidate_seeds, candidate_seeds_left


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


def test_a_job_run_again_ranks_its_first_draw_less_what_it_delivered() -> None:
    """A style of three items, factor 2: the first run drew six candidates and delivered its best, seed `best`,
    before it was cut short. Run again, it ranks the five others: the one it delivered cannot win a second time,
    and the next two are the ones the uninterrupted run would have delivered."""
    item_seeds = [11, 12, 13]
    first_draw = candidate_seeds(item_seeds, 6)
    best = first_draw[4]  # a derived seed: drawn again from the two items left alone, it would come back
    assert best in candidate_seeds(item_seeds[1:], 4)
    again = candidate_seeds_left(item_seeds, 6, {best})
    assert again == [seed for seed in first_draw if seed != best]


def test_requests_in_flight_follow_triton_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDIO_RENDER_CONCURRENCY", raising=False)
    assert RankingSettings.from_env().concurrency is None  # the worker asks Triton (worker.in_flight)
