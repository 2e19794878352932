"""STUDIO_RENDER_WORKERS (services/renderer/__main__.py): how many render jobs one renderer process runs at once."""

from __future__ import annotations

import pytest

from services.renderer.__main__ import WORKERS_ENV, worker_count


@pytest.mark.parametrize(("value", "count"), [("", 1), ("1", 1), ("4", 4)])
def test_worker_count_reads_the_environment(value: str, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, value)
    assert worker_count() == count


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_worker_count_is_refused_with_the_variable_named(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, value)
    with pytest.raises(ValueError, match=f"{WORKERS_ENV} must be a whole number of at least 1, got '{value}'"):
        worker_count()
