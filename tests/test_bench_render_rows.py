"""bench/render_rows.py: where a Triton row's wall time went, from Triton's statistics (the launcher's
execution_totals) before and after a wave; why a row failed or was cut off; the batch sizes a row's compile warms up."""

from __future__ import annotations

import subprocess

import pytest

from bench.render_rows import failure_text, serving_breakdown, serving_buckets
from bench.train_real_size import timed_out
from services.common.launchers.process import ProcessStartError
from services.common.launchers.triton import execution_totals


def statistics(batches: dict[int, tuple[int, float, float, float]]) -> dict:
    """Triton's per-model statistics, as its /stats endpoint gives them: batch size -> (executions, seconds of
    compute_input, compute_infer, compute_output)."""
    return {"batch_stats": [
        {"batch_size": size, **{part: {"count": count, "ns": int(seconds * 1e9)}
                                for part, seconds in zip(("compute_input", "compute_infer", "compute_output"),
                                                         times, strict=True)}}
        for size, (count, *times) in batches.items()]}


def test_a_wave_counts_only_its_own_executions() -> None:
    before = execution_totals(statistics({1: (3, 0.01, 3.0, 0.01)}))  # the warm-up's
    after = execution_totals(statistics({1: (3, 0.01, 3.0, 0.01), 8: (2, 0.02, 1.6, 0.18), 4: (1, 0.0, 0.9, 0.1)}))
    breakdown = serving_breakdown(before, after, wall_s=4.0)
    assert breakdown["mean_batch"] == pytest.approx(20 / 3)
    assert breakdown["model_busy"] == pytest.approx(2.8 / 4.0)  # inputs, executes and outputs of the wave
    assert breakdown["execute_ms"] == pytest.approx(2500 / 3)


def test_a_wave_without_executions_reports_nothing() -> None:
    totals = execution_totals(statistics({8: (2, 0.0, 1.0, 0.0)}))
    assert serving_breakdown(totals, totals, wall_s=1.0) == {}
    assert execution_totals({})["executions"] == 0  # a model that never ran has no batch_stats


def test_a_failed_load_reports_tritons_error_lines() -> None:
    log = ["I1127 loading: portrait_diffusion:1", "E1127 failed to load 'portrait_diffusion': CUDA out of memory",
           "| portrait_diffusion | 1 | UNAVAILABLE: Internal: CUDA out of memory |"]
    text = failure_text(ProcessStartError("tritonserver exited (exit code 1); last lines of x.log:\nI1127 bye"), log)
    assert text.startswith("ProcessStartError: tritonserver exited (exit code 1)")
    assert "CUDA out of memory" in text and "bye" not in text


def test_a_load_cut_by_its_time_box_reports_where_it_was() -> None:
    """No error line: a compile was still running. The launcher's log tail says so; the first line alone did not
    (the 2026-11-27 H200 row read 'not ready after 259s; last lines of ...: |' and nothing after)."""
    error = ProcessStartError("tritonserver not ready after 259s; last lines of x.log:\n"
                              "I1127 loading: portrait_diffusion:1\n\nI1127 compiling the UNet")
    text = failure_text(error, [])
    assert text == ("ProcessStartError: tritonserver not ready after 259s; last lines of x.log: | "
                    "I1127 loading: portrait_diffusion:1 | I1127 compiling the UNet")
    assert failure_text(RuntimeError("gone"), ["I1 one", "I2 two"]) == "RuntimeError: gone | I1 one | I2 two"


def test_a_whole_compile_served_to_several_subjects_warms_up_each_subjects_call() -> None:
    assert serving_buckets("cuda-graphs-cl", 8, 1) == "8"
    assert serving_buckets("cuda-graphs-cl", 8, 4) == "2,8", "a fused mode renders each subject's 2 images alone"
    assert serving_buckets("cuda-graphs-batched-cl", 8, 4) == "8", "a batched mode renders the batch in one call"
    assert serving_buckets("compile", 4, 3) == "2,4"


@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_child_cut_off_by_its_time_box_says_where_its_compile_was(as_bytes: bool) -> None:
    stderr = "# progress 900 ms: UNet: compiling for sample [16, 4, 64, 64]\nW some warning\n" \
             "# progress 95100 ms: VAE decoder: compiling for sample [8, 4, 64, 64]\nInductor noise\n"
    error = subprocess.TimeoutExpired("python", 139, stderr=stderr.encode() if as_bytes else stderr)
    assert timed_out(error, 139.2) == \
        "time box of 139 s reached; last at 95100 ms: VAE decoder: compiling for sample [8, 4, 64, 64]"
    assert timed_out(subprocess.TimeoutExpired("python", 10), 10) == "time box of 10 s reached"
