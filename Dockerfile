# syntax=docker/dockerfile:1
# keras-classifier-serving: gunicorn + Flask + onnxruntime, the model repository baked in.
#
#   GPU (default): docker build -t keras-serving:gpu .
#   CPU:           docker build --build-arg VARIANT=cpu -t keras-serving:cpu .
#
# onnxruntime-gpu 1.31 needs CUDA 13 and cuDNN 9 at run time: the GPU variant starts from
# NVIDIA's CUDA 13.0.2 runtime image with cuDNN (Ubuntu 24.04, Python 3.12); the CPU
# variant from the slim Python 3.11 image with onnxruntime's CPU wheel. Neither carries
# TensorFlow. See README "Containers".

ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- per-variant bases: a Python interpreter that can make virtual environments --------------
FROM ${CUDA_IMAGE} AS base-gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python3=3.12.*" "python3-venv=3.12.*" \
    && rm -rf /var/lib/apt/lists/*
ENV VENV_PYTHON=/usr/bin/python3

FROM ${PYTHON_IMAGE} AS base-cpu
ENV VENV_PYTHON=/usr/local/bin/python3

# ---- build: a virtual environment with the serving dependencies -----------------------------
# base-${VARIANT} is a stage above, not an image whose tag could be pinned:
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG VARIANT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY docker/install.sh docker/install.sh
RUN sh docker/install.sh /opt/venv "${VARIANT}"

# ---- runtime: the same base, the virtual environment, the config and the models -------------
# base-${VARIANT} is a stage above, not an image whose tag could be pinned:
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="keras-classifier-serving" \
      org.opencontainers.image.description="Keras classifiers as ONNX, served by onnxruntime over HTTP" \
      serving.variant="${VARIANT}"
RUN groupadd --system --gid 10001 serving \
    && useradd --system --uid 10001 --gid serving --no-create-home --shell /usr/sbin/nologin serving
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py ./
# The model repository; mount a volume at /models to serve other models without rebuilding.
COPY models/ /models/
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    SERVING_BIND=0.0.0.0:8000 \
    SERVING_MODEL_REPOSITORY=/models \
    SERVING_METRICS_DIR=/tmp/serving-metrics \
    SERVING_GRACEFUL_TIMEOUT=20
USER 10001:10001
EXPOSE 8000
# gunicorn (PID 1, exec form) turns SIGTERM into a graceful stop: it stops accepting and
# lets in-flight requests finish for SERVING_GRACEFUL_TIMEOUT seconds (docker stop -t 30).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["gunicorn", "-c", "/app/gunicorn.conf.py"]
