#!/bin/sh
# Installs the system packages the suite and the demo need, when they are missing:
#   - a Vulkan loader and Mesa's lavapipe software adapter, so the WebGPU backend has an
#     adapter on machines without a GPU (Debian: libvulkan1, mesa-vulkan-drivers);
#   - redis-server, which the response cache's Redis tests start on a loopback port (the
#     tests skip without it unless IPFS_ACCELERATE_REQUIRE_REDIS=1);
#   - Node.js and npm, which run the IPFS reference importer the content tests compare with
#     (tests/content/js; its npm packages are installed by the tests into a cache folder);
#   - docker.io (dockerd, containerd, runc), the Docker engine that the managed-server tests
#     start as root in a temporary folder when none is reachable (tests/servers/
#     docker_engine.py; they skip without it unless IPFS_ACCELERATE_REQUIRE_DOCKER=1);
# Without root or apt-get it prints what is missing and carries on; the WebGPU tests then
# skip unless IPFS_ACCELERATE_REQUIRE_WEBGPU=1 (as in CI), which turns the skip into a failure.
set -u
missing=""
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ! ls /etc/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  missing="$missing mesa-vulkan-drivers"
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  missing="$missing libvulkan1"
fi
if ! command -v redis-server >/dev/null 2>&1; then
  missing="$missing redis-server"
fi
if ! command -v node >/dev/null 2>&1; then
  missing="$missing nodejs"
fi
if ! command -v npm >/dev/null 2>&1; then
  missing="$missing npm"
fi
# a docker client alone (some images ship one) is not an engine: look for the daemon
if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
  missing="$missing docker.io"
fi
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_system_deps: missing system packages:$missing (no apt-get here; install them yourself)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure_system_deps: missing system packages:$missing (not root, no sudo)" >&2
    exit 0
  fi
fi
echo "ensure_system_deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null 2>&1
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
    || echo "ensure_system_deps: could not install$missing" >&2
fi
exit 0
