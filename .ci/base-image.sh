#!/usr/bin/env bash
# Build the local stand-in for the official CUDA PyTorch image, for CI and tests on a machine that
# reaches no container registry: Debian (bookworm) from debootstrap + python3/pip + the local CPU
# torch wheel pinned in constraints.txt, imported into buildah as a local image.
#
#   .ci/base-image.sh            # build localhost/xlam-base:bookworm-torch<ver>-cpu if missing
#   FORCE=1 .ci/base-image.sh    # rebuild the image (the cached debootstrap tarball is reused)
#   REFRESH=1 .ci/base-image.sh  # also redo debootstrap and the wheel download
#   .ci/base-image.sh --print-name   # print the image name and exit
#
# Layout mirrors pytorch/pytorch >= 2.10 (Ubuntu 24.04 there): the distribution's python3 with
# `python` on PATH (python-is-python3), pip from the distribution, torch pip-installed into the
# system interpreter (/usr/local/lib/python3.X/dist-packages), PEP 668 marker left in place.
# The Dockerfile only relies on: /bin/sh, `python` (or `python3`) on PATH, `import torch`.
#
# Environment:
#   XLAM_CACHE_DIR   cache root (default /var/cache/xlam-hpc): debootstrap .debs + rootfs tarball,
#                    torch + dependency wheels
#   BASE_SUITE       Debian suite (default bookworm; its python3 must match the torch wheel's cp tag)
#   DEBIAN_MIRROR    default: the host's apt mirror for that suite (/etc/apt/sources.list*)
#   BASE_PACKAGES    comma list given to debootstrap --include (default below)
#   BASE_NO_TORCH=1  leave torch out (a deliberately bad base for the Dockerfile's check step)
#   TORCH_WHEEL      default: $TORCH_WHEEL_DIR/torch-<pin>+cpu-cp311-*.whl (TORCH_WHEEL_DIR=/opt/wheels)
#   BASE_IMAGE       image name (default localhost/xlam-base:<suite>-torch<pin>-cpu[-notorch])
#   STORAGE_DRIVER   buildah storage driver (default vfs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XLAM_CACHE_DIR:-/var/cache/xlam-hpc}
SUITE=${BASE_SUITE:-bookworm}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
BUILDAH=(buildah --storage-driver "$STORAGE_DRIVER")
PACKAGES=${BASE_PACKAGES:-python3,python3-pip,python-is-python3,ca-certificates}

TORCH_PIN=$(sed -n 's/^torch==\([^[:space:];#]*\).*/\1/p' "$ROOT/constraints.txt")
[[ -n $TORCH_PIN ]] || { echo "base-image: no 'torch==' line in constraints.txt" >&2; exit 1; }
SUFFIX=""
[[ ${BASE_NO_TORCH:-0} == 1 ]] && SUFFIX="-notorch"
IMAGE=${BASE_IMAGE:-localhost/xlam-base:${SUITE}-torch${TORCH_PIN}-cpu${SUFFIX}}

if [[ ${1:-} == --print-name ]]; then echo "$IMAGE"; exit 0; fi

# ---- timing ---------------------------------------------------------------------------------------
declare -a TIMINGS=()
T0=$(date +%s.%N)
step() {  # step NAME CMD...: run, time, record
    local name=$1 t; shift
    t=$(date +%s.%N)
    echo "==> [base-image] $name" >&2
    "$@"
    TIMINGS+=("$(printf '%-34s %7.1fs' "$name" "$(echo "$(date +%s.%N) - $t" | bc)")")
}
report() {
    echo "---- base-image timings ----" >&2
    local l
    for l in "${TIMINGS[@]}"; do echo "  $l" >&2; done
    printf '  %-34s %7.1fs\n' total "$(echo "$(date +%s.%N) - $T0" | bc)" >&2
}

# ---- image already there? -------------------------------------------------------------------------
if [[ ${FORCE:-0} != 1 && ${REFRESH:-0} != 1 ]] && "${BUILDAH[@]}" inspect --type image "$IMAGE" >/dev/null 2>&1; then
    echo "base-image: $IMAGE exists (FORCE=1 rebuilds)" >&2
    report
    exit 0
fi

for tool in debootstrap buildah bc; do
    command -v "$tool" >/dev/null || { echo "base-image: '$tool' not found (apt-get install -y $tool)" >&2; exit 1; }
done

# ---- inputs ---------------------------------------------------------------------------------------
detect_mirror() {  # the host's apt URI for $SUITE: deb822 (*.sources) first, then one-line lists
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        uri=$(awk -v s="$SUITE" '
            /^[[:space:]]*$/ { if (u != "" && ok && deb) { print u; exit } u=""; ok=0; deb=0; next }
            /^URIs:/    { u=$2 }
            /^Types:/   { for (i = 2; i <= NF; i++) if ($i == "deb") deb=1 }
            /^Suites:/  { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
            END         { if (u != "" && ok && deb) print u }' "$f" | head -n1)
        [[ -n $uri ]] && break
    done
    if [[ -z $uri ]]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i+1) == s) { print $i; exit } }')
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${DEBIAN_MIRROR:-$(detect_mirror)}

if [[ -z $SUFFIX ]]; then
    TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
    if [[ -z ${TORCH_WHEEL:-} ]]; then
        shopt -s nullglob
        wheels=("$TORCH_WHEEL_DIR"/torch-"$TORCH_PIN"+cpu-cp311-cp311-*linux*x86_64.whl)
        shopt -u nullglob
        [[ ${#wheels[@]} -ge 1 ]] || {
            echo "base-image: no torch-$TORCH_PIN+cpu cp311 wheel in $TORCH_WHEEL_DIR (set TORCH_WHEEL)" >&2; exit 1; }
        TORCH_WHEEL=${wheels[0]}
    fi
fi

KEY=$(printf '%s\n' v1 "$SUITE" "$MIRROR" "$PACKAGES" minbase | sha256sum | cut -c1-12)
ROOTFS_TAR=$CACHE/base/debootstrap-$SUITE-minbase-$KEY.tar
DEB_CACHE=$CACHE/base/debs-$SUITE
WHEELS=$CACHE/base/wheels-torch$TORCH_PIN
mkdir -p "$CACHE/base" "$DEB_CACHE"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/xlam-base.XXXXXX")
ROOTFS=$WORK/rootfs
cleanup() {
    if mountpoint -q "$ROOTFS/proc" 2>/dev/null; then umount "$ROOTFS/proc"; fi
    if mountpoint -q "$ROOTFS/proc" 2>/dev/null; then
        echo "base-image: $ROOTFS/proc still mounted, leaving $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

echo "base-image: image=$IMAGE suite=$SUITE mirror=$MIRROR torch=${TORCH_WHEEL:-none}" >&2

# ---- 1. debootstrap (cached as a tarball) ---------------------------------------------------------
do_debootstrap() {
    local tmp=$WORK/debootstrap
    debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$DEB_CACHE" \
        "$SUITE" "$tmp" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
    # An image carries no device nodes, apt lists or downloaded .debs.
    rm -rf "${tmp:?}"/dev/* "${tmp:?}"/var/lib/apt/lists/* "${tmp:?}"/var/cache/apt/archives/*.deb \
        "${tmp:?}"/var/cache/apt/*.bin "${tmp:?}"/var/log/* "${tmp:?}"/tmp/* "${tmp:?}"/run/*
    mkdir -p "$tmp"/var/lib/apt/lists/partial
    tar --numeric-owner -C "$tmp" -cf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$tmp"
}
if [[ ${REFRESH:-0} == 1 || ! -s $ROOTFS_TAR ]]; then
    step "debootstrap $SUITE (minbase)" do_debootstrap
else
    echo "base-image: cached rootfs $ROOTFS_TAR" >&2
fi
step "unpack rootfs" bash -c 'mkdir -p "$1" && tar --numeric-owner -C "$1" -xf "$2"' _ "$ROOTFS" "$ROOTFS_TAR"

in_root() {  # run a command in the rootfs with a clean environment (no host PIP_* settings)
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore chroot "$ROOTFS" "$@"
}

# ---- 2. torch into the system python --------------------------------------------------------------
if [[ -z $SUFFIX ]]; then
    PYTAG=$(in_root python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    [[ $(basename "$TORCH_WHEEL") == *-"$PYTAG"-* ]] ||
        { echo "base-image: $TORCH_WHEEL does not fit the rootfs python ($PYTAG)" >&2; exit 1; }
    # torch's dependencies as wheels, fetched on the host (its pip config: mirror/find-links) for the
    # rootfs's python, cached; the chroot then installs offline.
    fetch_wheels() {
        mkdir -p "$WHEELS"
        python3 -m pip download -q --only-binary=:all: --implementation cp \
            --python-version "${PYTAG#cp}" --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64 \
            -c "$ROOT/constraints.txt" -d "$WHEELS" "$TORCH_WHEEL"
    }
    if [[ ${REFRESH:-0} == 1 || ! -f $WHEELS/.complete-$(basename "$TORCH_WHEEL") ]]; then
        step "download torch + deps wheels" fetch_wheels
        touch "$WHEELS/.complete-$(basename "$TORCH_WHEEL")"
    else
        echo "base-image: cached wheels $WHEELS" >&2
    fi
    install_torch() {
        mkdir -p "$ROOTFS/tmp/wheels"
        cp "$WHEELS"/*.whl "$ROOTFS/tmp/wheels/"
        [[ -f $ROOTFS/tmp/wheels/$(basename "$TORCH_WHEEL") ]] || cp "$TORCH_WHEEL" "$ROOTFS/tmp/wheels/"
        cp "$ROOT/constraints.txt" "$ROOTFS/tmp/constraints.txt"
        mount -t proc proc "$ROOTFS/proc"
        # the tarball has an empty /dev (as an image should); torch needs /dev/urandom to import
        mknod -m 666 "$ROOTFS/dev/null" c 1 3 && mknod -m 666 "$ROOTFS/dev/urandom" c 1 9
        in_root python3 -m pip install -q --break-system-packages --no-cache-dir --no-index \
            --find-links /tmp/wheels -c /tmp/constraints.txt "/tmp/wheels/$(basename "$TORCH_WHEEL")"
        in_root python -c 'import torch, sys; print("base-image: python", sys.version.split()[0], "torch", torch.__version__, torch.__file__)' >&2
        umount "$ROOTFS/proc"
        rm -rf "${ROOTFS:?}"/dev/* "${ROOTFS:?}"/tmp/* "${ROOTFS:?}"/root/.cache
    }
    step "pip install torch (chroot, offline)" install_torch
fi

# ---- 3. import into buildah -----------------------------------------------------------------------
import_image() {
    local ctr mnt
    ctr=$("${BUILDAH[@]}" from --quiet scratch)
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    tar --numeric-owner -C "$ROOTFS" -cf - . | tar --numeric-owner -C "$mnt" -xf -
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    local -a extra=()
    [[ -z $SUFFIX ]] && extra=(--env "PYTORCH_VERSION=$TORCH_PIN")  # as the official image sets it
    "${BUILDAH[@]}" config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 "${extra[@]}" \
        --workingdir /workspace --cmd /bin/bash \
        --label org.opencontainers.image.title=xlam-base \
        --label org.opencontainers.image.description="CI stand-in for pytorch/pytorch: Debian $SUITE, python3, torch $TORCH_PIN CPU${SUFFIX:+ (without torch)}" \
        "$ctr"
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
}
if [[ ${FORCE:-0} == 1 || ${REFRESH:-0} == 1 ]]; then "${BUILDAH[@]}" rmi "$IMAGE" >/dev/null 2>&1 || true; fi
step "import into buildah ($STORAGE_DRIVER)" import_image

"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE" | sed 's/^/base-image: built /' >&2
report
