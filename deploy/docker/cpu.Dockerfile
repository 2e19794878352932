# syntax=docker/dockerfile:1.7
# The CPU image: ingest, faceqa, privacy, and the renderer worker (it only talks to Triton).
# Build from the repository root, one image per service (SERVICE picks the pip extra):
#   docker build -f deploy/docker/cpu.Dockerfile --build-arg SERVICE=faceqa -t portrait-studio/faceqa:0.1.0 .
# The Deployment's args choose the module: ["services.faceqa"].
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN test -n "${SERVICE}" || (echo "--build-arg SERVICE=ingest|faceqa|privacy|renderer is required" && false)
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen gen
COPY services services
COPY studio_client studio_client
# The CPU torch index keeps CUDA out of these images (only the renderer extra pulls torch in).
RUN /opt/venv/bin/pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu ".[${SERVICE}]"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 studio \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin studio
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["python", "-m"]
