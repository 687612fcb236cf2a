# The trainer of docker-compose.yml's `train` profile: trains a model from the zoo on Fashion-MNIST (or an image
# folder) with the CPU build of torch, exports it to ONNX with the parity check, and writes the next version into the
# model repository (docker/train-entrypoint.sh). The server images never contain torch; this one does.
#
# torch: from the wheelhouse (docker/make-wheelhouse.sh train, with TORCH_SPEC naming a CPU build the host's pip can
# find), or from an index: pass --build-arg TORCH_INDEX_URL=<the PyTorch CPU wheel index>; without either, pip takes
# the default torch, which on Linux brings the CUDA libraries (several GB).

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS python
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM python AS build
ARG WHEELHOUSE=docker/wheelhouse
ARG TORCH_INDEX_URL=
ARG TORCH_SPEC=torch
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/cnnserve
COPY ${WHEELHOUSE}/ /wheelhouse/
COPY pyproject.toml docker/requirements.py /src/
# torch first and on its own, so that the train extra's range is already met by the chosen (CPU) build.
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; \
    elif [ -n "${TORCH_INDEX_URL}" ]; then set -- --index-url "${TORCH_INDEX_URL}"; fi; \
    /opt/cnnserve/bin/pip install "$@" "${TORCH_SPEC}"
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi; \
    python3 /src/requirements.py /src/pyproject.toml train > /tmp/requirements.txt; \
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
    /opt/cnnserve/bin/python -c 'import cnnserve.training.train, cnnserve.export.cli, torch, onnx'

FROM python AS train
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cnnserve-train" \
      org.opencontainers.image.description="cnnserve trainer: trains a zoo CNN with torch (CPU), exports ONNX into /models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 cnnserve \
    && useradd --system --uid 10001 --gid cnnserve --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cnnserve
COPY --from=build /opt/cnnserve /opt/cnnserve
COPY docker/train-entrypoint.sh /opt/cnnserve/bin/train-and-export
ENV PATH=/opt/cnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    CNNSERVE_MODEL_REPOSITORY=/models \
    CNNSERVE_DATA_DIR=/data
# Compose runs it as the owner of the host's model folder; this is the default otherwise.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["train-and-export"]
