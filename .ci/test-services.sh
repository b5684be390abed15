#!/usr/bin/env bash
# Test services for `make test`: the loopback Slurm cluster and buildah (for the container test).
# Installs the Debian packages when running as root (CI, containers, dev boxes with sudo rights);
# otherwise the tests that need them skip - except under CI=true, where they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-up}
if [ "$(id -u)" != 0 ]; then
  echo "test-services: not root, skipping Slurm/buildah setup (their tests will skip)" >&2
  [ "${CI:-}" = true ] && { echo "test-services: CI=true needs root" >&2; exit 1; }
  exit 0
fi
case "$cmd" in
  up)
    slurm/local-cluster.sh install
    slurm/local-cluster.sh up
    .ci/build-image.sh install
    ;;
  down)
    slurm/local-cluster.sh down
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
