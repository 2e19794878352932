# syntax=docker/dockerfile:1.7
# Rendering: NVIDIA Triton with our model repository (services/renderer/model_repository). The
# python-backend model imports services.renderer.pipeline from STUDIO_REPO_ROOT, so the services
# package rides along; its ML dependencies go into the image's own Python (3.12 in 25.06), the one
# Triton's python backend stub embeds.
#   docker build -f deploy/docker/triton.Dockerfile -t portrait-studio/triton:0.1.0 .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.06-py3
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

FROM ${TRITON_IMAGE}
ARG TORCH_INDEX
ENV PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1
RUN pip install --extra-index-url "${TORCH_INDEX}" "torch==2.13.0" "diffusers>=0.31" "transformers>=5.0" \
      "peft>=0.13" "accelerate>=0.34" "safetensors>=0.4" "numpy<2" "pillow>=10" "protobuf>=6.31"
COPY services /opt/studio/services
COPY gen/python/studio /opt/studio/studio
COPY services/renderer/model_repository /opt/studio/model_repository
ENV STUDIO_REPO_ROOT=/opt/studio PYTHONPATH=/opt/studio PYTHONDONTWRITEBYTECODE=1 HOME=/tmp HF_HUB_OFFLINE=1
USER 10001:10001
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/opt/studio/model_repository", "--model-control-mode=explicit", \
     "--load-model=portrait_diffusion"]
