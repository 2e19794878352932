"""LoRA training benchmark.

Default: the tiny model on the CPU, steps/s of the bare training loop against the trainer worker's
whole job (sealed crops in, progress events, sealed checkpoints, validation, sealed LoRA out) on
real nats-server and vault processes, and the worker's overhead as a ratio.

--real-size: random-weight SD1.5-size (512 px, latent 64²) and SDXL-size (1024 px, latent 128²)
UNets on a GPU, LoRA r=32 on the attention projections: step time, images/s and FLOP utilisation
(FLOPs counted with torch.utils.flop_counter, against the GPU's bf16 dense peak and a measured
8192³ bf16 matrix product), eager against optimised (bf16 frozen weights, fused AdamW, bigger
batch, CUDA graphs, torch.compile) in the same run, with the ratio. Reference, one H200, eager bf16, no compile:
SD1.5 batch 4 = 162 ms/step (60 TFLOP/s); SDXL batch 2 = 445 ms/step (91 TFLOP/s).

    python bench/train.py [--steps N] [--json]
    python bench/train.py --real-size [--budget-s 420] [--only sdxl] [--modes eager regional] [--batches 8]
                          [--device cpu --tiny-shapes]
    python bench/train.py --count-ops    (any machine: aten ops per eager step, SD1.5 and SDXL structure)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.train_real_size import count_step_ops, matmul_tflops, measure, peak_for, run_child  # noqa: E402
from services.common.machine import describe_machine  # noqa: E402

REFERENCE = {"sd15": (4, 162.0, 60.0), "sdxl": (2, 445.0, 91.0)}  # batch, ms/step, TFLOP/s
# (model, mode, batch, timed steps, share of the remaining budget it may use). Rows that start in seconds
# come first and may take most of what is left; a compile's share keeps one cold compile from taking all.
# "graphed" replays the bf16 step as CUDA graphs (seconds of capture, no compile); "regional" compiles
# each repeated block once (seconds to a minute cold); "compiled" the whole UNet.
REAL_SIZE_PLAN = (
    ("sd15", "eager", 4, 10, 0.5), ("sd15", "bf16", 16, 10, 0.5), ("sd15", "graphed", 16, 10, 0.5),
    ("sdxl", "eager", 2, 8, 0.5), ("sdxl", "bf16", 4, 8, 0.5), ("sdxl", "bf16", 8, 6, 0.5),
    ("sdxl", "graphed", 4, 8, 0.5), ("sdxl", "graphed", 8, 6, 0.5),
    ("sdxl", "regional", 8, 6, 0.4), ("sd15", "regional", 16, 10, 0.4),
    ("sd15", "compiled", 16, 10, 0.5), ("sdxl", "compiled", 4, 8, 1.0),
)
MODES = ("eager", "bf16", "graphed", "regional", "compiled")



def real_size(args) -> list[dict]:
    deadline = time.monotonic() + args.budget_s
    rows: list[dict] = []
    ceiling = run_child(["matmul"], 60) if args.device == "cuda" else {}
    print(f"# {describe_machine(with_torch=True)}", flush=True)
    if ceiling:
        print(f"# measured 8192^3 bf16 matmul: {ceiling.get('matmul_tflops', 0):.0f} TFLOP/s", flush=True)
    plan = [row for row in REAL_SIZE_PLAN
            if (not args.only or row[0] in args.only) and (not args.modes or row[1] in args.modes)
            and (not args.batches or row[2] in args.batches)
            and (row[1] != "graphed" or args.device == "cuda")]  # CUDA graphs: GPU only
    for index, (model, mode, batch, steps, share) in enumerate(plan):
        share = 1.0 if index == len(plan) - 1 else share  # the last row may use what is left
        left = deadline - time.monotonic()
        if left < 20:
            rows.append({"model": model, "mode": mode, "batch": batch, "error": "skipped: bench budget spent"})
            continue
        child_args = [model, mode, str(batch), str(args.steps or steps), args.device]
        row = run_child(child_args + (["--tiny-shapes"] if args.tiny_shapes else []), left * share)
        if "error" in row and "out of memory" in row["error"].lower() and batch > 1:
            row = run_child([model, mode, str(batch // 2), *child_args[3:]], (deadline - time.monotonic()) * share)
        rows.append({"model": model, "mode": mode, "batch": batch, **row})
        print(_row_line(rows[-1], ceiling), flush=True)
    _print_summary(rows, ceiling)
    return rows


def _row_line(row: dict, ceiling: dict) -> str:
    if "error" in row:
        return f"{row['model']:5} {row['mode']:9} batch {row['batch']:3}  {row['error']}"
    peak = peak_for(ceiling.get("gpu", ""))
    utilisation = f"{row['tflops'] / peak:6.1%} of {peak:.0f} peak" if peak else ""
    measured = f", {row['tflops'] / ceiling['matmul_tflops']:6.1%} of matmul" if ceiling.get("matmul_tflops") else ""
    return (f"{row['model']:5} {row['mode']:9} batch {row['batch']:3}  {row['step_ms']:8.1f} ms/step "
            f"{row['images_per_s']:7.2f} img/s {row['tflops']:7.1f} TFLOP/s {utilisation}{measured} "
            f"(warm-up {row['warmup_s']:.0f} s, peak mem {row['peak_gib']:.1f} GiB)")


def _print_summary(rows: list[dict], ceiling: dict) -> None:
    """Each row against eager in the same run, and against the H200 reference. The reference's 60 / 91
    TFLOP/s count 3 x forward per step (weight gradients included); the counter here sees only what a
    LoRA step runs (no weight gradients for the frozen base, about 2 x forward). Counted alike, the
    TFLOP/s ratio is the images/s ratio at the reference's size, printed as well."""
    print("\n# against eager (same run, same GPU) and against the H200 reference:")
    for row in rows:
        if "error" in row:
            continue
        eager = next((r for r in rows if r["model"] == row["model"] and r["mode"] == "eager" and "error" not in r),
                     None)
        versus_eager = "" if eager is None or row is eager else (
            f"x{row['tflops'] / eager['tflops']:.2f} TFLOP/s vs eager ({row['tflops']:.1f} vs {eager['tflops']:.1f}); ")
        batch, step_ms, tflops = REFERENCE[row["model"]]
        images_ratio = row["images_per_s"] / (batch / (step_ms / 1e3))
        print(f"{row['model']:5} {row['mode']:9} batch {row['batch']:3}: {versus_eager}x{row['tflops'] / tflops:.2f} "
              f"vs reference {tflops:.0f} TFLOP/s as counted here, x{images_ratio:.2f} counted as the reference counts"
              f"{_agreement(row, rows)}")


def _agreement(row: dict, rows: list[dict]) -> str:
    """A faster mode trains like bf16 at the same batch (same seed, data and steps): its LoRA moved as far."""
    bf16 = next((r for r in rows if (r["model"], r["mode"], r["batch"]) == (row["model"], "bf16", row["batch"])
                 and "lora_update_norm" in r and r is not row), None)
    if bf16 is None or "lora_update_norm" not in row or row["mode"] == "bf16":
        return ""
    return (f"; LoRA update norm {row['lora_update_norm']:.4g} vs bf16's {bf16['lora_update_norm']:.4g} "
            f"(x{row['lora_update_norm'] / max(bf16['lora_update_norm'], 1e-30):.3f})")


def count_ops() -> list[dict]:
    """What an eager step asks of the CPU: one dispatch per op, and a kernel launch per non-view op."""
    print(f"# {describe_machine(with_torch=True)}\n# aten ops per eager bf16 LoRA step (forward + backward, "
          "real block structure at toy widths; the count does not depend on widths or batch)")
    rows = [count_step_ops(model) for model in ("sd15", "sdxl")]
    for row in rows:
        print(f"{row['model']:5} {row['ops']:6d} ops, {row['non_view_ops']:6d} not views, {row['lora_layers']} LoRA "
              f"layers; {row['cpu_step_s_at_toy_widths'] * 1e3:.0f} ms per step on this CPU at toy widths "
              f"({row['cpu_step_s_at_toy_widths'] / row['ops'] * 1e6:.1f} us per op)")
    return rows


def child(argv: list[str]) -> None:
    if argv[0] == "matmul":
        print(json.dumps(matmul_tflops()))
        return
    model, mode, batch, steps, device = argv[:5]
    print(json.dumps(measure(model, mode, int(batch), int(steps), device, tiny="--tiny-shapes" in argv)), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-size", action="store_true")
    parser.add_argument("--count-ops", action="store_true", help="aten ops per eager LoRA step (CPU, toy widths)")
    parser.add_argument("--device", default="cuda", help="real-size only (cpu with --tiny-shapes for a smoke run)")
    parser.add_argument("--tiny-shapes", action="store_true", help="real-size structure at toy widths")
    parser.add_argument("--only", nargs="*", choices=("sd15", "sdxl"), help="real-size models to run")
    parser.add_argument("--modes", nargs="*", choices=MODES, help="real-size modes to run (eager: the baseline)")
    parser.add_argument("--batches", nargs="*", type=int, help="real-size: only the plan's rows at these batch sizes")
    parser.add_argument("--budget-s", type=float, default=420.0, help="real-size time box for the whole run")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (tiny: training steps)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.count_ops:
        rows = count_ops()
    elif args.real_size:
        rows = real_size(args)
    else:
        from bench.train_tiny import tiny_cpu

        rows = tiny_cpu(args, describe_machine(with_torch=True))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
