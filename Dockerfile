# xlam-hpc runtime image: the official CUDA PyTorch image + a venv with xlam-hpc and its pinned deps.
#
#   docker build -t xlam-hpc .                      # or: podman build / buildah bud
#   docker run --rm --gpus all xlam-hpc --version
#
# BASE_IMAGE must provide /bin/sh, `python` (or `python3`) on PATH with pip, and the torch pinned in
# constraints.txt; its torch (CUDA build) is kept: xlam-hpc and its other dependencies go into the
# venv /opt/xlam-hpc, created with --system-site-packages so torch (and the rest of the base's
# stack) is imported from the base. The check step below fails the build early otherwise.
# Default: pytorch/pytorch 2.13.0, CUDA 13.0, cuDNN 9, runtime flavour (Ubuntu 24.04, Python 3.12,
# torch in the system interpreter). The digest is the one public projects pin for this tag; it
# could not be checked against Docker Hub from the machine this was written on.
# CUDA 13 needs NVIDIA driver >= 580; for older drivers build with
#   --build-arg BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
ARG BASE_IMAGE=docker.io/pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime@sha256:db80a41f8428644cebcb3d75b0b62df334ab6c0e75785951eb25f48bfbd42407

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build
ARG BASE_IMAGE
# Package index settings for pip, unset = plain PyPI. Set them for a mirror or a wheelhouse, e.g.
#   --build-arg PIP_INDEX_URL=https://mirror/simple
#   buildah bud -v /srv/wheels:/wheels:ro --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1
#   buildah bud -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt
# They live in this build stage only: nothing of them reaches the final image's config or history.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=""
ARG PIP_CERT=""
ARG PIP_TRUSTED_HOST=""
# Drop the tests/ folders that wheels ship (pandas, numpy, pyarrow, matplotlib: ~80 MB).
ARG PRUNE_TESTS=1
ENV PYTHONNOUSERSITE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_INPUT=1
WORKDIR /src
# README.m[d]: the readme named in pyproject.toml, when there is one (a glob may match nothing)
COPY constraints.txt pyproject.toml README.m[d] ./

# Check step: python, torch == the pin in constraints.txt, python within requires-python, pip.
RUN set -eu; \
    die() { printf '\nERROR: %s\n\n' "$*" >&2; exit 1; }; \
    want=$(sed -n 's/^torch==\([^[:space:];#]*\).*/\1/p' constraints.txt); \
    [ -n "$want" ] || die "constraints.txt has no 'torch==' pin"; \
    PY=$(command -v python || command -v python3 || true); \
    [ -n "$PY" ] || die "BASE_IMAGE=${BASE_IMAGE} has no python on PATH (PATH=$PATH). xlam-hpc needs a PyTorch image with python and torch==${want} (e.g. pytorch/pytorch:${want}-cuda13.0-cudnn9-runtime)."; \
    have=$("$PY" -c 'import torch; print(torch.__version__)' 2>/tmp/torch.err) \
      || die "BASE_IMAGE=${BASE_IMAGE}: '$PY -c \"import torch\"' failed: $(tail -n 1 /tmp/torch.err). xlam-hpc needs the base image's torch==${want}."; \
    have=$(printf '%s\n' "$have" | tail -n 1); \
    [ "${have%%+*}" = "${want%%+*}" ] \
      || die "BASE_IMAGE=${BASE_IMAGE} has torch ${have}, constraints.txt pins torch==${want}. Use a base image with torch ${want} (pytorch/pytorch:${want}-cuda<X.Y>-cudnn9-runtime) or change the pin."; \
    "$PY" -m pip --version >/dev/null 2>&1 || "$PY" -c 'import ensurepip' 2>/dev/null \
      || die "BASE_IMAGE=${BASE_IMAGE}: $PY has neither pip nor ensurepip."; \
    "$PY" -c 'import platform, re, sys; from pip._vendor.packaging.specifiers import SpecifierSet; spec = re.search(r"requires-python\s*=\s*\"([^\"]+)\"", open("pyproject.toml").read()).group(1); v = platform.python_version(); sys.exit(0 if v in SpecifierSet(spec) else "python %s, xlam-hpc requires-python %s" % (v, spec))' 2>/tmp/py.err \
      || die "BASE_IMAGE=${BASE_IMAGE}: $(tail -n 1 /tmp/py.err)"; \
    rm -f /tmp/torch.err /tmp/py.err; \
    echo "base image OK: $PY ($("$PY" -c 'import platform; print(platform.python_version())')), torch ${have} (pin ${want})"

# The venv sees the base's packages (torch) through --system-site-packages; pip comes from the base
# (Debian/Ubuntu's python3-venv, i.e. ensurepip, is not needed) unless the base has none.
# torch is pinned to the base's exact build (2.13.0+cu130 ...), so pip keeps it or fails, never
# downloads another; the other pins of constraints.txt apply as everywhere else.
# Dependencies first (from pyproject.toml, this layer is reused while it and constraints.txt are
# unchanged), the package itself after COPY of its sources.
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_CERT PIP_TRUSTED_HOST; do \
        eval "[ -n \"\${$v:-}\" ]" || unset "$v"; \
    done; \
    PY=$(command -v python || command -v python3); \
    if "$PY" -m pip --version >/dev/null 2>&1; then \
        "$PY" -m venv --system-site-packages --without-pip /opt/xlam-hpc; \
    else \
        "$PY" -m venv --system-site-packages /opt/xlam-hpc; \
    fi; \
    VPY=/opt/xlam-hpc/bin/python; \
    torch_of() { "$VPY" -c 'import torch; print(torch.__version__, torch.__file__)' 2>/dev/null | tail -n 1; }; \
    before=$(torch_of); \
    if [ -z "$before" ]; then \
        # $PY is itself a venv (its packages are not "system" site-packages of a new venv): chain its
        # site dirs after ours with a .pth, which keeps the same precedence as --system-site-packages
        "$PY" -c 'import site; print("import site; " + "; ".join("site.addsitedir(%r)" % d for d in site.getsitepackages()))' \
            > "$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_xlam_base_site.pth"; \
        before=$(torch_of); \
    fi; \
    [ -n "$before" ] || { echo "ERROR: torch of BASE_IMAGE ($PY) is not importable from the venv /opt/xlam-hpc" >&2; exit 1; }; \
    grep -viE '^torch[[:space:]]*==' constraints.txt > /opt/xlam-hpc/constraints.txt; \
    echo "torch==${before%% *}" >> /opt/xlam-hpc/constraints.txt; \
    "$VPY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt; \
    "$VPY" -m pip install --constraint /opt/xlam-hpc/constraints.txt --requirement /tmp/requirements.txt; \
    after=$(torch_of); \
    [ "$after" = "$before" ] || { echo "ERROR: torch changed: base '$before', now '$after'" >&2; exit 1; }; \
    ! ls -d /opt/xlam-hpc/lib/python*/site-packages/torch >/dev/null 2>&1 \
      || { echo "ERROR: a torch was installed into the venv" >&2; exit 1; }; \
    echo "torch kept: $after"; \
    if [ "${PRUNE_TESTS}" = 1 ]; then \
        find /opt/xlam-hpc/lib/python*/site-packages -mindepth 2 -type d -name tests -prune -exec rm -rf {} +; \
    fi; \
    rm -f /tmp/requirements.txt

COPY xlam_hpc ./xlam_hpc
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_CERT PIP_TRUSTED_HOST; do \
        eval "[ -n \"\${$v:-}\" ]" || unset "$v"; \
    done; \
    /opt/xlam-hpc/bin/python -m pip install --no-deps --constraint /opt/xlam-hpc/constraints.txt /src; \
    # BFCL benchmark data for `xlam-hpc eval --bench` on offline nodes: the bfcl-eval wheel, read as a zip, not installed
    /opt/xlam-hpc/bin/python -m pip download -q --no-deps -d /opt/xlam-hpc/share/bfcl "$(grep -i '^bfcl-eval==' constraints.txt)"; \
    if /opt/xlam-hpc/bin/python -m pip check 2>&1 | grep -i '^xlam-hpc '; then \
        echo "ERROR: xlam-hpc's requirements are not met (pip check above)" >&2; exit 1; \
    fi; \
    /opt/xlam-hpc/bin/xlam-hpc --version

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=unknown
ARG VCS_REF=unknown
ARG APP_UID=10001
LABEL org.opencontainers.image.title="xlam-hpc" \
      org.opencontainers.image.description="Containerized HPC batch jobs for training tool-using LLM agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

COPY --from=build /opt/xlam-hpc /opt/xlam-hpc

# Caches under one writable root, mode 1777 so any uid can use it (Slurm/apptainer run as the
# caller's uid). Each variable can be overridden at run time (docker run -e HF_HOME=/scratch/hf ...,
# apptainer --env ...), or mount a volume over /cache. A read-only image (apptainer SIF) needs one
# of the two: /cache itself is not writable there.
ENV PATH=/opt/xlam-hpc/bin:${PATH} \
    PYTHONNOUSERSITE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor

RUN set -eu; \
    if command -v useradd >/dev/null 2>&1; then \
        useradd --uid "${APP_UID}" --user-group --create-home --home-dir /home/xlam --shell /bin/sh xlam; \
    else \
        echo "xlam:x:${APP_UID}:${APP_UID}::/home/xlam:/bin/sh" >> /etc/passwd; \
        echo "xlam:x:${APP_UID}:" >> /etc/group; \
        mkdir -p /home/xlam && chown "${APP_UID}:${APP_UID}" /home/xlam; \
    fi; \
    mkdir -p /cache/huggingface /cache/triton /cache/torchinductor /workspace; \
    chmod 1777 /cache /cache/huggingface /cache/triton /cache/torchinductor; \
    chown "${APP_UID}:${APP_UID}" /workspace; \
    v=$(xlam-hpc --version); echo "$v"; \
    if [ "${VERSION}" != unknown ]; then \
        [ "$v" = "xlam-hpc ${VERSION}" ] || { echo "ERROR: VERSION=${VERSION} but the image has '$v'" >&2; exit 1; }; \
    fi

USER ${APP_UID}:${APP_UID}
WORKDIR /workspace
ENTRYPOINT ["xlam-hpc"]
CMD ["--help"]
