#!/bin/sh
# Train a zoo model, export it, and add it to the model repository as the next version of CNNSERVE_TRAIN_NAME.
# Arguments are passed on to `cnnserve train` (e.g. --max-steps 200 for a smoke run, --image-folder /data/pets).
#
#   CNNSERVE_TRAIN_NAME    model name in the repository (default fashion_lenet)
#   CNNSERVE_TRAIN_ARCH    zoo architecture: lenet, lenet_relu, cnn_bn (default lenet)
#   CNNSERVE_TRAIN_EPOCHS  passes over the training set (default 15)
#   CNNSERVE_DATA_DIR      Fashion-MNIST IDX files (default /data); also the export's parity data
#   CNNSERVE_MODEL_REPOSITORY  where the version folder is written (default /models)
#
# The server loads the repository at start-up: restart it to serve the new version (`docker compose restart server`).
set -eu

name=${CNNSERVE_TRAIN_NAME:-fashion_lenet}
checkpoint=$(mktemp -d)/$name.pt

cnnserve train --model "${CNNSERVE_TRAIN_ARCH:-lenet}" --epochs "${CNNSERVE_TRAIN_EPOCHS:-15}" \
    --name "$name" --out "$checkpoint" "$@"
# No --version: the export takes one more than the highest existing, so the server's "latest" moves to it.
cnnserve export "$checkpoint" --name "$name" --repository "${CNNSERVE_MODEL_REPOSITORY:-/models}" \
    --parity-data "${CNNSERVE_DATA_DIR:-/data}" --parity-limit 1000
