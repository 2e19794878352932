#!/usr/bin/env bash
# On a GPU host that has PyTorch, transformers and peft but no network: install the bundle that
# bench/gpu_host/pack.sh made, check the host, then run the named steps, each in its own time box.
# Logs and JSON results go to $OUT (default ./gpu-results); a summary is printed last.
#
#   bash bench/gpu_host/run.sh [STEP[:SECONDS] ...]
#
# STUDIO_RENDER_MODES replaces the --modes list of every render-* step it runs (bench/render.py's mode names).
# Steps (default: stub-speed:40 batched-lora:20 render-sd15:505, the stub's interpreter against this host's, the
# batched LoRA layer's two formulations, then the whole-UNet compile in-process with most of one ~9.5-minute call;
# then, in a second call on the warm machine, the same compile through Triton from the warm inductor cache:
# STUDIO_RENDER_MODES="eager cuda-graphs-batched-cl" run.sh render-sd15-whole:200):
#   check          only the host checks below (always run first)
#   stub-speed     bench/stub_speed.py: the same host-bound work in this venv's python and inside Triton's python
#                  backend stub, which embeds libpython3.x.so (Ubuntu's python3 is linked statically)
#   batched-lora   bench/batched_lora_layer.py: the -batched modes' LoRA layer at the real models' sizes, its
#                  up-projection added after the product against added by the product (baddbmm_, what it does now)
#   render-smoke   the real-size render path at toy widths, eager, in-process and through Triton
#   render-sd15-graphed, render-sdxl-graphed
#                  bench/render.py --real-size --only sd15|sdxl --profile: eager in-process (the baseline, with
#                  where its device time goes), then through Triton graphed-batched (the deploy default), eager
#                  (the serving overhead) and the UNet's blocks compiled one by one inside CUDA graphs, with NHWC
#                  convolutions (-cl) and without, then the faster modes in-process with their profiles
#   render-sd15-whole, render-sdxl-whole
#                  bench/render.py --real-size --only sd15|sdxl --profile: eager in-process (the baseline), then through
#                  Triton graphed-batched (the deploy default), eager (the serving overhead) and the whole UNet
#                  compiled with CUDA graphs, batched adapters and NHWC convolutions (cuda-graphs-batched-cl, a cold
#                  compile inside Triton's load), then both in-process with their profiles (the compile warm)
#   render-sd15-batch16
#                  eager in-process at the reference's batch of 8 (the baseline), then graphed-batched and eager
#                  through Triton with a max_batch_size of 16 (--serve-batch 16; a lone job's 64 candidates fill it),
#                  then graphed-batched in-process at 16
#   schedulers-sd15, schedulers-sdxl
#                  bench/scheduler_mix.py --real-size: a batch whose images use four catalogue schedulers, one call
#                  per scheduler against one call (services/renderer/row_schedulers.py), eager and graphed-batched
#   render-sd15-profile, render-sdxl-profile
#                  in-process only, each mode with its device-time profile: eager (PEFT LoRA), fused LoRA,
#                  CUDA graphs, regional compile (bf16, FP8), channels-last
#   render-sd15-subjects, render-sdxl-subjects
#                  batches of 4 subjects' images: eager (one pipeline call per subject) against batched and
#                  graphed-batched (one call, every subject's LoRA in its own slot), in-process and through Triton
#   render-sd15, render-sdxl
#                  in-process, eager then the whole UNet compiled with CUDA graphs, batched adapters and NHWC
#                  convolutions (cuda-graphs-batched-cl), whose cold compile takes most of a call
#   train-sdxl-graphed  bench/train.py --real-size --only sdxl --modes bf16 graphed --batches 8
#   train-sdxl     bf16 and graphed at batch 4 and 8, then regional torch.compile
#   train-sd15     bench/train.py --real-size --only sd15 --modes eager bf16 graphed compiled
#   trainer-path   bench/gpu_host/trainer_check.py: bf16 frozen weights, validation, checkpoint, resume,
#                  CUDA graphs against eager
set -uo pipefail
cd "$(dirname "$0")/../.."
bundle=${STUDIO_GPU_BUNDLE:-.gpu_bundle}
out=${OUT:-gpu-results}
venv=${STUDIO_GPU_VENV:-/tmp/studio-venv}
base_python=${PYTHON:-python3}
python=$venv/bin/python
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# One inductor cache for every step and for Triton's stub: a later compile of the same graph is warm.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/studio-inductor}
version=$("$base_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# A venv of our own that sees the host's packages after its own (a .pth file): its numpy<2 and
# diffusers come first. Triton's python backend stub ignores PYTHONPATH; it takes its packages from
# the `python` on PATH, which the launcher sets to this venv's.
install_bundle() {
  local archive="$bundle/tritonserver-py$version.tar.xz" site
  [ -f "$archive" ] || { echo "no $archive: run bench/gpu_host/pack.sh --python $version here first" >&2; return 1; }
  "$base_python" -m venv --without-pip --clear "$venv" 2>/dev/null || make_venv_by_hand || return 1
  site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$base_python" -c 'import site; print("\n".join(site.getsitepackages()))' > "$site/host-packages.pth"
  # The host's scipy, scikit-learn and pandas are built for numpy 2 and break on the bundle's numpy 1.26;
  # transformers imports scikit-learn whenever it finds it. A None in sys.modules makes find_spec say absent.
  echo 'import sys; [sys.modules.setdefault(name, None) for name in ("scipy", "sklearn", "pandas")]' \
    > "$site/zz-hide-numpy2-packages.pth"
  "$base_python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$bundle"/wheels/*.whl && tar -C "$site" -xJf "$archive"
}

# Where the venv module is missing: what it would write, a pyvenv.cfg beside bin/python.
make_venv_by_hand() {
  local real version_dir
  real=$("$base_python" -c 'import os, sys; print(os.path.realpath(sys._base_executable))') || return 1
  version_dir=$("$base_python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
  rm -rf "$venv" && mkdir -p "$venv/bin" "$venv/lib/$version_dir/site-packages" || return 1
  ln -s "$real" "$venv/bin/python" && ln -s "$real" "$venv/bin/python3"
  printf 'home = %s\ninclude-system-site-packages = false\n' "$(dirname "$real")" > "$venv/pyvenv.cfg"
}

check_host() {
  nvidia-smi -L 2>&1 | head -4
  "$python" - <<'EOF' || return 1
import sys, sysconfig
from pathlib import Path
import numpy, torch, diffusers, tritonclient.grpc.aio  # noqa: F401 - each must import
from diffusers import UNet2DConditionModel, StableDiffusionXLPipeline  # noqa: F401 - pulls transformers and peft
libpython = Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("LDLIBRARY") or "")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      f" {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}, numpy {numpy.__version__},"
      f" diffusers {diffusers.__version__}; libpython {libpython} exists: {libpython.is_file()}")
if numpy.__version__ >= "2":
    sys.exit("numpy 2 is first on the path: Triton's python backend would return empty outputs")
EOF
  local stub libdir
  stub=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pytriton/tritonserver/python_backend_stubs/$version/triton_python_backend_stub
  libdir=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
  if LD_LIBRARY_PATH="$libdir" ldd "$stub" | grep "not found"; then
    echo "the python backend stub misses the libraries above: Triton rows will fail" >&2
  fi
}

run_step() {
  local step=$1 seconds=$2 budget=$(( $2 - 25 ))
  local model=${step#render-}
  model=${model%-*}  # render-sd15[-graphed|-profile] -> sd15
  local -a command modes
  # shellcheck disable=SC2206 - STUDIO_RENDER_MODES is a space-separated list of modes
  modes=(${STUDIO_RENDER_MODES:-})
  case "$step" in
    render-smoke) command=(bench/render.py --real-size --tiny-shapes --steps 3 --modes eager --budget-s "$budget") ;;
    stub-speed) command=(bench/stub_speed.py --rounds 4000 --repeats 7) ;;
    batched-lora) command=(bench/batched_lora_layer.py) ;;
    render-sd15-graphed|render-sdxl-graphed)
      [ ${#modes[@]} -gt 0 ] || modes=(eager graphed-batched regional-graphed-batched-cl regional-graphed-batched)
      command=(bench/render.py --real-size --only "$model" --profile --modes "${modes[@]}" --budget-s "$budget") ;;
    render-sd15-whole|render-sdxl-whole)
      [ ${#modes[@]} -gt 0 ] || modes=(eager graphed-batched cuda-graphs-batched-cl)
      command=(bench/render.py --real-size --only "$model" --profile --modes "${modes[@]}" --budget-s "$budget") ;;
    render-sd15-batch16)
      [ ${#modes[@]} -gt 0 ] || modes=(eager graphed-batched)
      command=(bench/render.py --real-size --only sd15 --serve-batch 16 --modes "${modes[@]}" --budget-s "$budget") ;;
    schedulers-sd15|schedulers-sdxl)
      [ ${#modes[@]} -gt 0 ] || modes=(eager graphed-batched)
      command=(bench/scheduler_mix.py --real-size --device cuda --model "${step#schedulers-}" --steps 25
               --batch "$([ "$step" = schedulers-sd15 ] && echo 8 || echo 4)" --modes "${modes[@]}") ;;
    render-sd15-profile|render-sdxl-profile)
      command=(bench/render.py --real-size --only "$model" --no-triton --profile --modes eager fused graphed
               regional-graphed regional-graphed-fp8 fused-cl --budget-s "$budget") ;;
    render-sd15-subjects|render-sdxl-subjects)
      [ ${#modes[@]} -gt 0 ] || modes=(eager batched graphed-batched regional-graphed-batched)
      command=(bench/render.py --real-size --only "$model" --subjects 4 --modes "${modes[@]}" --budget-s "$budget") ;;
    render-sd15|render-sdxl)
      [ ${#modes[@]} -gt 0 ] || modes=(eager cuda-graphs-batched-cl)
      command=(bench/render.py --real-size --only "$model" --no-triton --profile --modes "${modes[@]}"
               --budget-s "$budget") ;;
    train-sdxl-graphed)
      command=(bench/train.py --real-size --only sdxl --modes bf16 graphed --batches 8 --budget-s "$budget") ;;
    train-sdxl) command=(bench/train.py --real-size --only sdxl --modes bf16 graphed regional --budget-s "$budget") ;;
    train-sd15) command=(bench/train.py --real-size --only sd15 --modes eager bf16 graphed compiled --budget-s "$budget") ;;
    trainer-path) command=(bench/gpu_host/trainer_check.py) ;;
    *) echo "unknown step $step" >&2; return 2 ;;
  esac
  # STUDIO_GPU_CPU_SMOKE=1: the same steps on the CPU at toy widths, to try a bundle on a machine without a GPU.
  if [ "${STUDIO_GPU_CPU_SMOKE:-}" = 1 ] && [ "$step" != stub-speed ] && [ "$step" != batched-lora ]; then
    command+=(--device cpu)
    [ "$step" = trainer-path ] || command+=(--tiny-shapes --steps 2)
  fi
  echo "## $step (time box $seconds s): python ${command[*]}"
  timeout --kill-after=15 "$seconds" "$python" "${command[@]}" --json > "$out/$step.log" 2>&1
  local status=$?
  grep -v '^\[' "$out/$step.log" | grep -vE 'it/s\]|Loading|Writing|warn|Warn' | tail -40
  echo "## $step: exit $status"
}

started=$(date +%s)
install_bundle || exit 1
check_host 2>&1 | tee "$out/check.log" || exit 1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(stub-speed:40 batched-lora:20 render-sd15:505)
for entry in "${steps[@]}"; do
  name=${entry%%:*}
  [ "$name" = check ] && continue
  seconds=${entry#*:}
  [ "$seconds" = "$entry" ] && seconds=240
  run_step "$name" "$seconds"
done
echo "# all steps done in $(( $(date +%s) - started )) s; logs in $out"
