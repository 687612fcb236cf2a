#!/usr/bin/env bash
# Install Triton's C++ load generator perf_analyzer for benchmarks/run_all.py, and print the command that runs it.
#
#   benchmarks/install_perf_analyzer.sh            -> prints e.g. "env LD_LIBRARY_PATH=DIR/lib DIR/perf_analyzer"
#
# The binary comes from the tritonclient 2.51.0 wheel (the last build whose glibc needs fit Debian 12), with its
# two shared libraries: libb64 from the distribution (apt) and a CUDA runtime stub from the nvidia-cuda-runtime-cu12
# wheel (the binary links it; nothing here needs a GPU). pip downloads the wheels from the index it is set up with.
# Idempotent: everything goes under $CNNSERVE_CACHE/perf_analyzer (default ~/.cache/cnnserve/perf_analyzer).
set -euo pipefail

dir=${CNNSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnserve}/perf_analyzer
pip=${PIP:-python3 -m pip}
version=${PERF_ANALYZER_TRITONCLIENT:-2.51.0}

if [ ! -x "$dir/perf_analyzer" ] || [ ! -e "$dir/lib/libcudart.so.12" ]; then
    mkdir -p "$dir/wheels" "$dir/lib"
    $pip download --quiet --no-deps --dest "$dir/wheels" "tritonclient==$version" >&2
    rm -rf "$dir/wheels/x" && (cd "$dir/wheels" && python3 -m zipfile -e tritonclient-"$version"-*.whl x)
    cp "$dir/wheels/x/tritonclient-$version.data/data/bin/perf_analyzer" "$dir/perf_analyzer"
    chmod +x "$dir/perf_analyzer"
    rm -rf "$dir/wheels/x"
    if ! dpkg -s libb64-0d >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libb64-0d >&2
    fi
    $pip download --quiet --no-deps --dest "$dir/wheels" 'nvidia-cuda-runtime-cu12==12.6.77' >&2 ||
        $pip download --quiet --no-deps --dest "$dir/wheels" 'nvidia-cuda-runtime-cu12<13' >&2
    rm -rf "$dir/wheels/cu" && (cd "$dir/wheels" && python3 -m zipfile -e nvidia_cuda_runtime_cu12-*.whl cu)
    cp "$(find "$dir/wheels/cu" -name 'libcudart.so.12*' | head -1)" "$dir/lib/libcudart.so.12"
    rm -rf "$dir/wheels/cu"
fi
if ! env LD_LIBRARY_PATH="$dir/lib" "$dir/perf_analyzer" --version >/dev/null 2>&1; then
    echo "install_perf_analyzer: $dir/perf_analyzer does not run here (missing libraries?):" >&2
    env LD_LIBRARY_PATH="$dir/lib" ldd "$dir/perf_analyzer" | grep 'not found' >&2 || true
    exit 1
fi
echo "env LD_LIBRARY_PATH=$dir/lib $dir/perf_analyzer"
