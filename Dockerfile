# syntax=docker/dockerfile:1
#
# The API server image. It installs and starts the service with the same commands as the
# README and the Makefile: `make install` into a virtual environment, then `mmr serve`.
#
# CPU (default):
#   docker build -t mmr .
# CUDA: a base image with the NVIDIA runtime and the matching PyTorch wheel index. The index
# must carry the torch version the Makefile pins (TORCH_SPEC); override it with
# --build-arg TORCH_SPEC="torch==X torchvision==Y" when it does not.
#   docker build -t mmr:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
# and run it with `docker run --gpus all ...` (MMR_DEVICE=auto picks the GPU).

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# make runs the install; python >= 3.11 with venv comes with python images, and is installed
# here on other bases (Ubuntu 22.04: python3.11 from universe; 24.04: its python3 is 3.12).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends make ca-certificates; \
    if ! python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
        apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        || apt-get install -y --no-install-recommends python3 python3-venv; \
    fi; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .

# The same install as `make run`, minus the dev tools and the editable link; PYTHON picks a
# python >= 3.11 where the base's python3 is older (Ubuntu 22.04 ships 3.10).
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eux; \
    py=python3; \
    command -v python3.11 >/dev/null && py=python3.11; \
    make install VENV=/opt/venv PYTHON="$py" EXTRAS= EDITABLE= \
        TORCH_INDEX="$TORCH_INDEX" ${TORCH_SPEC:+"TORCH_SPEC=$TORCH_SPEC"}

# Data (SQL, blobs, index snapshots) and the model cache live in volumes under /data; the
# directories are created here so that fresh named volumes belong to the service user.
# open_clip caches weights in $MMR_DATA_DIR/models; HF_HOME catches any other hub download
# in the same volume.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/mmr mmr \
    && mkdir -p /data/models/hf \
    && chown -R mmr:mmr /data

ENV PATH=/opt/venv/bin:$PATH \
    MMR_DATA_DIR=/data \
    HF_HOME=/data/models/hf

USER mmr
VOLUME ["/data"]
EXPOSE 8000

# /readyz answers 200 once model, database and indexes are loaded; a first start may spend
# minutes downloading weights, hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

# Exec form: mmr is PID 1 and gets SIGTERM, so the shutdown snapshots the indexes.
CMD ["mmr", "serve", "--host", "0.0.0.0", "--port", "8000"]
