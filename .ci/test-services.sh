#!/usr/bin/env bash
# Services the test suite needs, for `make test` (and so for CI):
#   up    install Debian's slurmctld/slurmd/slurm-client/munge, buildah, debootstrap, bc and shellcheck when missing,
#         then start the 2-node loopback Slurm cluster (slurm/local-cluster.sh)
#   down  stop the cluster
# Needs root (CI, containers, dev boxes). Without root it does nothing and the Slurm/container tests
# skip - except under CI=true, where a missing service is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-up}
if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then echo "test-services: CI=true needs root" >&2; exit 1; fi
  echo "test-services: not root: skipping Slurm/buildah setup (those tests will skip)" >&2
  exit 0
fi
case "$cmd" in
  up)
    need=()
    for pkg in buildah debootstrap bc shellcheck; do
      command -v "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
      echo "test-services: apt-get install ${need[*]}" >&2
      DEBIAN_FRONTEND=noninteractive apt-get -qq update
      DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "${need[@]}" >/dev/null
    fi
    slurm/local-cluster.sh install
    slurm/local-cluster.sh up
    ;;
  down)
    slurm/local-cluster.sh down || true
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
