#!/usr/bin/env bash
# Installs Debian's redis-server (the rendered redis.conf is tested on a real Redis).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
  echo "install-redis: redis-server is missing and this user cannot install it: apt-get install redis-server" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
# Debian starts a system Redis on 6379; the tests start their own on free ports.
$SUDO service redis-server stop >/dev/null 2>&1 || true
