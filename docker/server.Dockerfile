# The cnnserve gRPC server: CPU (onnxruntime) by default, GPU (onnxruntime-gpu) with
#   --build-arg BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 --build-arg ORT_EXTRA=gpu
# onnxruntime-gpu 1.31 is built for CUDA 13.x and cuDNN 9.x: the CUDA runtime image provides both, the host needs an
# NVIDIA driver for CUDA 13 (R580 or newer) and the NVIDIA container toolkit.
#
# Build from the repository root (docker compose does): docker build -f docker/server.Dockerfile -t cnnserve/server .
# Air-gapped: fill docker/wheelhouse/ with docker/make-wheelhouse.sh server cpu (the image's Python version), build
# on a local base (docker/build-local-base.sh), and pip installs from the wheelhouse with --no-index.
#
# The final stage has the virtual environment and Python only: no torch, no compilers, no pip caches; it runs as an
# unprivileged user and reports health through the gRPC health service.

ARG BASE_IMAGE=python:3.11-slim

# ---- python: the base image with python3 and venv (CUDA images have neither; Debian-based Python images do) ----
FROM ${BASE_IMAGE} AS python
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# ---- build: a virtual environment with cnnserve[server,<ORT_EXTRA>] -------------------------------------------------
FROM python AS build
# cpu -> onnxruntime, gpu -> onnxruntime-gpu (never both: they install the same module).
ARG ORT_EXTRA=cpu
# A folder inside the build context; when it holds wheels, pip uses them and no index.
ARG WHEELHOUSE=docker/wheelhouse
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/cnnserve
COPY ${WHEELHOUSE}/ /wheelhouse/
# Dependencies first, from pyproject.toml alone, so that editing the source does not re-install them.
COPY pyproject.toml docker/requirements.py /src/
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi; \
    python3 /src/requirements.py /src/pyproject.toml server "${ORT_EXTRA}" > /tmp/requirements.txt; \
    /opt/cnnserve/bin/pip install "$@" -r /tmp/requirements.txt
COPY README.md /src/
COPY cnnserve /src/cnnserve
COPY proto /src/proto
COPY server /src/server
COPY client /src/client
COPY training /src/training
COPY export /src/export
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi; \
    /opt/cnnserve/bin/pip install "$@" --no-deps /src; \
    /opt/cnnserve/bin/pip uninstall -y pip; \
    /opt/cnnserve/bin/python -c 'import cnnserve.server.app, onnxruntime, grpc_health.v1.health'

# ---- server: what runs ------------------------------------------------------------------------------------------------
FROM python AS server
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG ORT_EXTRA=cpu
LABEL org.opencontainers.image.title="cnnserve-server" \
      org.opencontainers.image.description="cnnserve gRPC inference server (onnxruntime, ${ORT_EXTRA}): Open Inference Protocol v2 and cnnserve.v1 Classifier on 8001, Prometheus metrics on 8002, health on 8003" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 cnnserve \
    && useradd --system --uid 10001 --gid cnnserve --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cnnserve
COPY --from=build /opt/cnnserve /opt/cnnserve
COPY docker/healthcheck.py /opt/cnnserve/healthcheck.py
# Every ServerConfig field is a CNNSERVE_* variable (`cnnserve serve --help`); these are the container's defaults.
# Metrics are published on purpose (Prometheus scrapes them from another container); 8003 serves grpc.health.v1
# only, in plaintext, for the HEALTHCHECK and for probes that cannot speak TLS or send a token.
ENV PATH=/opt/cnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CNNSERVE_HOST=0.0.0.0 \
    CNNSERVE_PORT=8001 \
    CNNSERVE_METRICS_PORT=8002 \
    CNNSERVE_METRICS_HOST=0.0.0.0 \
    CNNSERVE_HEALTH_PORT=8003 \
    CNNSERVE_MODEL_REPOSITORY=/models
USER 10001:10001
WORKDIR /tmp
EXPOSE 8001 8002 8003
# SERVING only once a model version is loaded, and no longer while draining after SIGTERM (asked on the health port,
# so it works with TLS, client certificates and tokens on 8001).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/cnnserve/bin/python", "/opt/cnnserve/healthcheck.py"]
ENTRYPOINT ["cnnserve", "serve"]
