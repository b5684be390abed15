#!/usr/bin/env bash
# Build the xlam-hpc image with buildah (chroot isolation, vfs: no daemon, no privileges beyond root,
# no registry) and smoke-run it. Used by CI and the container tests.
#
#   .ci/image.sh              # base image (.ci/base-image.sh, cached) + build + smoke
#   .ci/image.sh build        # build only
#   .ci/image.sh smoke        # smoke-run an existing $IMAGE
#
# Environment:
#   IMAGE               tag to build (default localhost/xlam-hpc:dev)
#   BASE_IMAGE          base to build on (default: the local CPU stand-in from .ci/base-image.sh,
#                       built first if missing). A registry image needs a registry, which CI lacks.
#   LAYERS              0 (default): one layer per stage, nothing kept between runs;
#                       1: buildah --layers (per-step cache; with vfs every step is a full copy: slower)
#   XLAM_PIP_FROM_HOST  1 (default): hand this host's pip settings to the build: CA bundle (PIP_CERT),
#                       find-links dirs and file:// indexes (bind-mounted read-only), index URLs
#   BUD_ARGS            extra arguments for `buildah bud` (word-split)
#   STORAGE_DRIVER      buildah storage driver (default vfs)
#   KEEP_IMAGES=1       do not remove the image this build replaced
#   FORCE=1             rebuild even if $IMAGE was built from the same inputs (label xlam-hpc.build-inputs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODE=${1:-all}
case $MODE in all | build | smoke) ;; *) echo "usage: $0 [all|build|smoke]" >&2; exit 2 ;; esac

VERSION_FOR_TAG=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/xlam_hpc/__init__.py")
IMAGE=${IMAGE:-localhost/xlam-hpc:${VERSION_FOR_TAG}}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
BUILDAH=(buildah --storage-driver "$STORAGE_DRIVER")
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' xlam_hpc/__init__.py)
[[ -n $VERSION ]] || { echo "image: no __version__ in xlam_hpc/__init__.py" >&2; exit 1; }

declare -a TIMINGS=()
T0=$(date +%s.%N)
step() {
    local name=$1 t; shift
    t=$(date +%s.%N)
    echo "==> [image] $name" >&2
    "$@"
    TIMINGS+=("$(printf '%-30s %7.1fs' "$name" "$(echo "$(date +%s.%N) - $t" | bc)")")
}
report() {
    echo "---- image timings ----" >&2
    local l
    for l in "${TIMINGS[@]}"; do echo "  $l" >&2; done
    printf '  %-30s %7.1fs\n' total "$(echo "$(date +%s.%N) - $T0" | bc)" >&2
}
CTR=""
on_exit() {
    local rc=$?
    [[ -z $CTR ]] || "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true
    report
    [[ $rc == 0 ]] || echo "image: FAILED (exit $rc)" >&2
}
trap on_exit EXIT

image_id() { "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }
image_size() { "${BUILDAH[@]}" images --noheading --format '{{.Size}}' "$1" 2>/dev/null | head -n1; }

# ---- host pip settings -> build args + read-only bind mounts ---------------------------------------
declare -a PIP_ARGS=()
host_pip_args() {
    local line key val dir
    # KEY=VALUE lines from pip's own configuration loader (env > user > global), values as pip sees them
    while IFS='=' read -r key val; do
        [[ -n $val ]] || continue
        case $key in
            cert)
                [[ -r $val ]] || continue
                PIP_ARGS+=(-v "$val:/run/xlam-pip/ca.crt:ro" --build-arg PIP_CERT=/run/xlam-pip/ca.crt) ;;
            find-links | index-url | extra-index-url)
                local kept=()
                for line in $val; do
                    dir=${line#file://}
                    if [[ $dir == /* ]]; then
                        [[ -e $dir ]] || continue
                        # a file:// simple index links to ../../files: mount its parent
                        [[ $dir == */simple || $dir == */simple/ ]] && dir=$(dirname "${dir%/}")
                        PIP_ARGS+=(-v "$dir:$dir:ro")
                    fi
                    kept+=("$line")
                done
                [[ ${#kept[@]} -gt 0 ]] || continue
                local arg=PIP_${key^^}; arg=${arg//-/_}
                PIP_ARGS+=(--build-arg "$arg=${kept[*]}") ;;
            trusted-host)
                PIP_ARGS+=(--build-arg "PIP_TRUSTED_HOST=$val") ;;
        esac
    done < <(python3 - <<'EOF' 2>/dev/null || true
from pip._internal.configuration import Configuration
c = Configuration(isolated=False)
c.load()
items = dict(c.items())
for opt in ("cert", "find-links", "index-url", "extra-index-url", "trusted-host"):
    for sect in (":env:", "install", "global"):
        v = items.get(f"{sect}.{opt}")
        if v:
            print(f"{opt}={' '.join(str(v).split())}")
            break
EOF
)
}

# ---- steps -----------------------------------------------------------------------------------------
ensure_base() {
    if [[ -z ${BASE_IMAGE:-} ]]; then
        bash "$ROOT/.ci/base-image.sh"
        BASE_IMAGE=$(bash "$ROOT/.ci/base-image.sh" --print-name)
    fi
    [[ -n $(image_id "$BASE_IMAGE") ]] || {
        echo "image: base image $BASE_IMAGE not in local storage (no registry here)" >&2; exit 1; }
}

# Hash of everything the build reads: context files (.dockerignore keeps only these), the base image's
# id and the build args. Stored as a label; an image with the same hash is not rebuilt (FORCE=1 does).
inputs_hash() {
    {
        printf '%s\n' "$BASE_IMAGE" "$(image_id "$BASE_IMAGE")" "$VERSION" "$1" "${LAYERS:-0}" "${BUD_ARGS:-}"
        find Dockerfile .dockerignore pyproject.toml constraints.txt README.md LICENSE xlam_hpc \
            -name __pycache__ -prune -o -type f ! -name '*.py[cod]' -print 2>/dev/null | LC_ALL=C sort |
            xargs sha256sum || true
    } | sha256sum | cut -c1-16
}

build() {
    local rev old new hash
    rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    if [[ $rev != unknown && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then rev=$rev-dirty; fi
    hash=$(inputs_hash "$rev")
    old=$(image_id "$IMAGE")
    if [[ -n $old && ${FORCE:-0} != 1 ]] && [[ $("${BUILDAH[@]}" inspect --type image --format \
        '{{index .OCIv1.Config.Labels "xlam-hpc.build-inputs"}}' "$IMAGE" 2>/dev/null) == "$hash" ]]; then
        echo "image: $IMAGE is up to date (inputs $hash; FORCE=1 rebuilds)" >&2
        return 0
    fi
    [[ ${XLAM_PIP_FROM_HOST:-1} == 1 ]] && host_pip_args
    local -a layers=()
    [[ ${LAYERS:-0} == 1 ]] && layers=(--layers)
    # shellcheck disable=SC2086
    "${BUILDAH[@]}" bud --isolation chroot "${layers[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "VERSION=$VERSION" --build-arg "VCS_REF=$rev" --label "xlam-hpc.build-inputs=$hash" \
        "${PIP_ARGS[@]}" ${BUD_ARGS:-} \
        -t "$IMAGE" -f Dockerfile .
    new=$(image_id "$IMAGE")
    if [[ -n $old && $old != "$new" && ${KEEP_IMAGES:-0} != 1 ]]; then
        # the image this build replaced, unless something else still uses it
        "${BUILDAH[@]}" rmi "$old" >/dev/null 2>&1 || true
    fi
}

smoke() {
    local out cfg
    [[ -n $(image_id "$IMAGE") ]] || { echo "image: $IMAGE not found" >&2; exit 1; }
    cfg=$("${BUILDAH[@]}" inspect --type image --format \
        '{{.OCIv1.Config.Entrypoint}} user={{.OCIv1.Config.User}} version={{index .OCIv1.Config.Labels "org.opencontainers.image.version"}} revision={{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' \
        "$IMAGE")
    echo "image: config $cfg" >&2
    [[ $cfg == "[xlam-hpc] "* ]] || { echo "image: entrypoint is not xlam-hpc" >&2; exit 1; }
    [[ $cfg != *" user= "* && $cfg != *" user=0"* && $cfg != *" user=root"* ]] ||
        { echo "image: runs as root" >&2; exit 1; }
    [[ $cfg == *" version=$VERSION "* ]] || { echo "image: version label != $VERSION" >&2; exit 1; }

    CTR=$("${BUILDAH[@]}" from --quiet --pull-never "$IMAGE")
    run() { "${BUILDAH[@]}" run --isolation chroot "$CTR" -- "$@"; }

    out=$(run xlam-hpc --version)
    echo "image: xlam-hpc --version -> $out" >&2
    [[ $out == "xlam-hpc $VERSION" ]] || { echo "image: expected 'xlam-hpc $VERSION'" >&2; exit 1; }
    out=$(run xlam-hpc formats)
    [[ -n $out ]] || { echo "image: 'xlam-hpc formats' printed nothing" >&2; exit 1; }
    echo "image: xlam-hpc formats -> $(wc -l <<<"$out") formats" >&2
    run sh -c 'set -e
        [ "$(id -u)" != 0 ] || { echo "runs as root" >&2; exit 1; }
        for d in "$HF_HOME" "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"; do
            touch "$d/.w" && rm "$d/.w" || { echo "cache dir $d not writable" >&2; exit 1; }
        done
        python -c "import sys, torch, xlam_hpc
assert not torch.__file__.startswith(sys.prefix), (\"torch from the venv\", torch.__file__)
print(\"image: uid\", __import__(\"os\").getuid(), \"torch\", torch.__version__, torch.__file__, \"xlam_hpc\", xlam_hpc.__version__)"' >&2
    out=$(run python -c "from xlam_hpc.evaluate.bfcl import bfcl_wheel, load_bfcl; w = bfcl_wheel(); print(w, len(load_bfcl('bfcl-simple', w)))")
    echo "image: BFCL data -> $out" >&2
    [[ $out == "/opt/xlam-hpc/share/bfcl/"*" 400" ]] || { echo "image: BFCL data not shipped in the image" >&2; exit 1; }
    # the demo's short training inside the image: convert, shard, 3 SFT steps on the local executor
    out=$(run xlam-hpc demo --output-dir /tmp/xlam-demo --steps 3 2>&1) || { echo "$out" >&2; echo "image: demo failed" >&2; exit 1; }
    grep -q "checkpoint   /tmp/xlam-demo/run/checkpoint-3" <<<"$out" || { echo "$out" >&2; echo "image: demo did not save checkpoint-3" >&2; exit 1; }
    echo "image: demo training inside the image finished: $(grep -m1 'metrics' <<<"$out")" >&2
    "${BUILDAH[@]}" rm "$CTR" >/dev/null
    CTR=""
}

if [[ $MODE != smoke ]]; then
    step "base image" ensure_base
    step "buildah bud" build
    echo "image: $IMAGE $(image_size "$IMAGE") (base $BASE_IMAGE $(image_size "$BASE_IMAGE"))" >&2
fi
if [[ $MODE != build ]]; then
    step "smoke run" smoke
fi
