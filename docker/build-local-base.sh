#!/usr/bin/env bash
# Build the local base images from nothing but a Debian mirror, for machines that cannot pull from an image
# registry (air-gapped hosts, our CI). debootstrap makes a minimal Debian root, `docker import` turns it into an
# image; no registry is contacted.
#
#   docker/build-local-base.sh     prints the image's tag, building it only when it is not cached
#
# The image, cnnserve-local/python:<suite>-<hash>, is a minimal Debian with python3, venv and CA certificates: the
# BASE_IMAGE of every Dockerfile in docker/. Its apt sources name the same mirror, so the nginx and Prometheus images
# install their Debian packages on it with apt. The tag has a hash of the package list and this script, so a changed
# list never reuses a stale image.
#
# Environment:
#   CNNSERVE_CACHE   cache directory (default ${XDG_CACHE_HOME:-~/.cache}/cnnserve); keeps the root tarball so a
#                    wiped Docker image store is refilled by `docker import` in seconds instead of a debootstrap.
#   DEBIAN_MIRROR    mirror URL (default: the first Debian URI in this host's apt sources, read at run time)
#   DEBIAN_SUITE     default bookworm (its python3 is 3.11, which the wheelhouse is built for)
set -euo pipefail

suite=${DEBIAN_SUITE:-bookworm}
cache=${CNNSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnserve}
packages="python3,python3-venv,ca-certificates"
# Bump when the recipe below changes what ends up in the image; the tag (and so the cache) follows it.
recipe=1

log() { echo "build-local-base: $*" >&2; }

# The host's Debian mirror, from deb822 sources (URIs:) or one-line sources (deb URL suite ...). Security and
# update suites live elsewhere; the first plain Debian URI is the one debootstrap wants.
host_mirror() {
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' | grep -v -- '-security' | head -n1 || true)
    fi
    [ -n "$uri" ] || { log "no Debian mirror in /etc/apt/sources.list*: set DEBIAN_MIRROR"; exit 2; }
    echo "$uri"
}

# The tag depends on the suite, the package list and the recipe, not on the mirror (all mirrors serve the same
# packages) nor on comments in this script.
image_tag() {  # name packages
    local hash
    hash=$(echo "$suite $2 $recipe" | sha256sum | cut -c1-12)
    echo "cnnserve-local/$1:$suite-$hash"
}

ensure_image() {  # name packages
    local name=$1 pkgs=$2 tag tarball root mirror
    tag=$(image_tag "$name" "$pkgs")
    if docker image inspect "$tag" >/dev/null 2>&1; then
        echo "$tag"; return
    fi
    tarball="$cache/base/${tag#cnnserve-local/}.tar.gz"; tarball=${tarball//:/-}
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 2; }
        mirror=${DEBIAN_MIRROR:-$(host_mirror)}
        root=$(mktemp -d "${TMPDIR:-/tmp}/cnnserve-rootfs.XXXXXX")
        trap 'rm -rf "$root"' EXIT
        log "debootstrap $suite ($pkgs) from $mirror; a few minutes, once (log: $cache/base/debootstrap.log)"
        mkdir -p "$cache/base"
        # dpkg without fsync for the install only (as Docker's own Debian images are built): the root is thrown
        # away on failure anyway, and it roughly halves the time on a slow disk.
        mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
        echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/cnnserve-unsafe-io"
        if ! debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror" > "$cache/base/debootstrap.log" 2>&1; then
            tail -n 20 "$cache/base/debootstrap.log" >&2
            log "debootstrap failed; is $mirror reachable? (set DEBIAN_MIRROR to another mirror)"
            exit 1
        fi
        rm -f "$root/etc/dpkg/dpkg.cfg.d/cnnserve-unsafe-io"
        # Slim the image: no apt lists, caches, docs or man pages (none are needed at run time).
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log
        tar -C "$root" --numeric-owner -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$root"; trap - EXIT
    fi
    log "docker import $tarball as $tag"
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$tag" >/dev/null
    echo "$tag"
}

ensure_image python "$packages"
