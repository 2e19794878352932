# syntax=docker/dockerfile:1.7
# Rendering: NVIDIA Triton with our model repository (services/renderer/model_repository). The
# python-backend model imports services.renderer.pipeline from STUDIO_REPO_ROOT, so the services
# package rides along; its ML dependencies go into the Python that Triton's python backend stub embeds.
#   docker build -f deploy/docker/triton.Dockerfile -t portrait-studio/triton:0.1.0 .
#
# That Python is built here, not Ubuntu's. The stub embeds libpython3.12.so, and Ubuntu's shared library lacks the
# profile-guided and link-time optimisation its statically linked python3 gets. A launch-bound render runs its host
# side at the interpreter's speed. On the 2026-11-27 H200, each Triton execute took 1.10-1.15x the same render
# in-process. bench/stub_speed.py, on a 2-core VM:
# - the stub on Debian's shared libpython3.11: 1.07-1.12x Debian's static python3.11;
# - the stub on a libpython built with --enable-optimizations --with-lto: 0.98-1.02x
# (bench/render_results.md, "The stub's interpreter").
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.06-py3
# The minor version must be the one the image's stub was built for (3.12 in 25.06): the build checks it.
ARG PYTHON_VERSION=3.12.11
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

FROM ubuntu:24.04 AS python
ARG PYTHON_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends build-essential ca-certificates curl \
      libbz2-dev libffi-dev liblzma-dev libsqlite3-dev libssl-dev uuid-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL "https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tgz" | tar -xz -C /tmp \
    && cd "/tmp/Python-${PYTHON_VERSION}" \
    && ./configure --prefix=/opt/python --enable-shared --enable-optimizations --with-lto \
         LDFLAGS=-Wl,-rpath,/opt/python/lib \
    && make -j"$(nproc)" && make install && rm -rf "/tmp/Python-${PYTHON_VERSION}"

FROM ${TRITON_IMAGE}
ARG TORCH_INDEX
COPY --from=python /opt/python /opt/python
# The stub loads the libpython the dynamic linker finds first and takes its prefix (stdlib, site-packages) from the
# python3 on PATH.
ENV PATH=/opt/python/bin:${PATH} LD_LIBRARY_PATH=/opt/python/lib:${LD_LIBRARY_PATH} PIP_NO_CACHE_DIR=1
RUN ldd /opt/tritonserver/backends/python/triton_python_backend_stub | grep -q "=> /opt/python/lib/libpython" \
    || { echo "the python backend stub does not load /opt/python's libpython: PYTHON_VERSION's minor version" \
              "must be the stub's" >&2; exit 1; }
RUN python3 -m pip install --extra-index-url "${TORCH_INDEX}" "torch==2.13.0" "diffusers>=0.31" "transformers>=5.0" \
      "peft>=0.13" "accelerate>=0.34" "safetensors>=0.4" "numpy<2" "pillow>=10" "protobuf>=6.31"
COPY services /opt/studio/services
COPY gen/python/studio /opt/studio/studio
COPY services/renderer/model_repository /opt/studio/model_repository
ENV STUDIO_REPO_ROOT=/opt/studio PYTHONPATH=/opt/studio PYTHONDONTWRITEBYTECODE=1 HOME=/tmp HF_HUB_OFFLINE=1
USER 10001:10001
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/opt/studio/model_repository", "--model-control-mode=explicit", \
     "--load-model=portrait_diffusion"]
