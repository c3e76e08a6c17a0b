#!/usr/bin/env bash
# setup.sh - installs what Gantry needs to build, test and run its demo on Debian 12.
# Idempotent: installs only what is missing. Needs root (or sudo) when something is.
set -euo pipefail

PACKAGES=(gcc meson ninja-build pkg-config python3 curl
          librdkafka-dev libpq-dev libcurl4-openssl-dev libjansson-dev libuv1-dev libssl-dev
          libcunit1-dev libmicrohttpd-dev libpcre2-dev
          postgresql kcat json-schema-test-suite python3-yaml)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the vendors' SDKs as clients of gantry-api (tests/sdk).
# Asked by command, not by package: a machine may have Node.js from elsewhere
# (NodeSource's nodejs bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
