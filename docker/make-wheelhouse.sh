#!/usr/bin/env bash
# Fill docker/wheelhouse/ with the wheels an image needs, downloaded on this host, so that `docker build` installs
# with `pip --no-index` (pip inside a build may have no index, or no way to verify its TLS certificate).
#
#   docker/make-wheelhouse.sh server cpu          the CPU server image (the extras of pyproject.toml to install)
#   docker/make-wheelhouse.sh server gpu          the GPU server image
#   docker/make-wheelhouse.sh train               the training image (torch: the host's pip must find a CPU build)
#
# The wheels are for the images' Python (PYTHON_VERSION, default 3.11: Debian bookworm's and python:3.11-slim's)
# on x86_64 Linux, whatever this host runs. Downloads are cached under $CNNSERVE_CACHE/wheelhouse/<hash>, keyed by
# the requested extras, pyproject.toml's dependency lists and this script; docker/wheelhouse/ then gets hard links
# (or copies) of exactly that set, so a build context never carries wheels another image needed.
#
# Environment: CNNSERVE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/cnnserve), PYTHON_VERSION, PIP (default: pip of
# the python3 on PATH), TORCH_SPEC (default torch; pin a CPU build, e.g. torch==2.13.0+cpu, for the train image).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
dest="$here/wheelhouse"
cache=${CNNSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnserve}
pyver=${PYTHON_VERSION:-3.11}
pip=${PIP:-python3 -m pip}
[ $# -gt 0 ] || { echo "usage: $0 EXTRA... (e.g. server cpu)" >&2; exit 2; }

# The base dependencies plus each extra, and setuptools: the build backend pip needs to build cnnserve itself inside
# the image (docker/requirements.py, which the Dockerfiles use as well).
requirements=$(python3 "$here/requirements.py" --build-system "$repo/pyproject.toml" "$@")
if [[ " $* " == *" train "* ]]; then
    # torch is in the train extra as a range; TORCH_SPEC chooses the build (a CPU one keeps CUDA libraries out).
    requirements="${TORCH_SPEC:-torch}"$'\n'"$requirements"
fi

key=$( { echo "$pyver"; echo "$requirements"; cat "$0"; } | sha256sum | cut -c1-16)
store="$cache/wheelhouse/$key"
if [ ! -f "$store/.complete" ]; then
    echo "make-wheelhouse: downloading wheels for [$*] (cp${pyver/./}, x86_64) into $store" >&2
    mkdir -p "$store"
    echo "$requirements" > "$store/requirements.txt"
    # --platform/--python-version make pip pick wheels for the image, not for this host; only binary wheels can be
    # chosen that way, which also keeps compilers out of the build. pip 23 does not widen a manylinux tag to the
    # older glibc versions it implies, so name them all, up to 2.36 (bookworm's glibc).
    platforms=(--platform manylinux2014_x86_64)
    for glibc in 17 24 27 28 31 34 35 36; do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
    $pip download --quiet --dest "$store" --only-binary=:all: "${platforms[@]}" \
        --python-version "$pyver" --implementation cp -r "$store/requirements.txt" >&2
    touch "$store/.complete"
fi

mkdir -p "$dest"
find "$dest" -maxdepth 1 -name '*.whl' -delete
for wheel in "$store"/*.whl; do
    ln -f "$wheel" "$dest/" 2>/dev/null || cp -f "$wheel" "$dest/"
done
echo "make-wheelhouse: docker/wheelhouse/ holds $(find "$dest" -maxdepth 1 -name '*.whl' | wc -l) wheels for [$*]" >&2
