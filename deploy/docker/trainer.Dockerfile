# syntax=docker/dockerfile:1.7
# The trainer: CUDA runtime base, Python 3.11 (python-build-standalone through uv), CUDA torch.
#   docker build -f deploy/docker/trainer.Dockerfile -t portrait-studio/trainer:0.1.0 .
# After the first pull, pin the bases by digest too (docker buildx imagetools inspect IMAGE:TAG).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.4
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_LINK_MODE=copy
RUN uv venv --python 3.11 /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen gen
COPY services services
COPY studio_client studio_client
RUN uv pip install --python /opt/venv/bin/python --index-strategy unsafe-best-match \
      --extra-index-url "${TORCH_INDEX}" ".[trainer]"

FROM ${CUDA_IMAGE}
RUN groupadd --gid 10001 studio \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin studio
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp HF_HUB_OFFLINE=1
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["python", "-m"]
CMD ["services.trainer"]
