#!/usr/bin/env bash
# Pack what the real-size benches need on a GPU host that has PyTorch, transformers and peft but no
# network: wheels for the target Python and a trimmed tritonserver (the binary, the python backend,
# one Python's stub and only the shared libraries they load), from this checkout's .venv.
#
#   bash bench/gpu_host/pack.sh [--python 3.12] [--out .gpu_bundle]
#
# Then copy the checkout with .gpu_bundle/ to the host and run bench/gpu_host/run.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
python_version=3.12
out=.gpu_bundle
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python_version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--python X.Y] [--out DIR]" >&2; exit 2 ;;
  esac
done
venv_python=.venv/bin/python
site=$("$venv_python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
version_of() { "$venv_python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
tag=${python_version/./}

mkdir -p "$out/wheels"
rm -f "$out"/wheels/*.whl "$out"/tritonserver-py*.tar.xz  # one Python's server: the device carry holds 64 MiB
# numpy<2: with numpy 2 the python backend's outputs come back empty (DESIGN.md, Models → Triton).
# grpcio and protobuf travel so tritonclient's generated code meets the versions it was built for.
# peft too: the LoRA loading we test here depends on its version (transformers, 13 MB, does not fit).
wheels=("diffusers==$(version_of diffusers)" "peft==$(version_of peft)" "tritonclient==$(version_of tritonclient)"
        "python-rapidjson==$(version_of python-rapidjson)" "numpy==$(version_of numpy)"
        "grpcio==$(version_of grpcio)" "protobuf==$(version_of protobuf)")
platforms=()
for platform in manylinux1_x86_64 manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 \
                manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do
  platforms+=(--platform "$platform")
done
"$venv_python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp --abi "cp$tag" --abi abi3 --abi none "${platforms[@]}" -d "$out/wheels" "${wheels[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
server="$site/pytriton/tritonserver"
libs="$site/nvidia_pytriton.libs"
stub="$server/python_backend_stubs/$python_version/triton_python_backend_stub"
[ -x "$stub" ] || { echo "nvidia-pytriton has no python backend stub for Python $python_version" >&2; exit 1; }
mkdir -p "$stage/pytriton/tritonserver/backends/python" "$stage/pytriton/tritonserver/python_backend_stubs/$python_version" \
         "$stage/nvidia_pytriton.libs"
touch "$stage/pytriton/__init__.py"  # the launcher finds the folder; PyTriton's own API is not used
cp -r "$server/bin" "$stage/pytriton/tritonserver/"
cp "$server/backends/python/libtriton_python.so" "$server/backends/python/triton_python_backend_utils.py" \
   "$stage/pytriton/tritonserver/backends/python/"
cp "$stub" "$stage/pytriton/tritonserver/python_backend_stubs/$python_version/"
# Only the libraries the three binaries load (found through their RUNPATH into nvidia_pytriton.libs).
for binary in "$server/bin/tritonserver" "$server/backends/python/libtriton_python.so" "$stub"; do
  ldd "$binary" | awk '{print $3}' | grep nvidia_pytriton.libs || true
done | sort -u | xargs -r -I{} cp {} "$stage/nvidia_pytriton.libs/"
tar -C "$stage" -cf - . | xz -T0 -6 > "$out/tritonserver-py$python_version.tar.xz"

du -b "$out"/wheels/*.whl "$out"/*.tar.xz | awk '{printf "%8.1f MB  %s\n", $1 / 1e6, $2}'
du -sb "$out" | awk '{printf "bundle: %.1f MB in %s (the checkout itself travels too)\n", $1 / 1e6, $2}'
