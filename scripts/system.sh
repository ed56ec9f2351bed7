#!/usr/bin/env bash
# Debian packages the tests need and pip cannot give: a real Redis server (shared cache) and headless Chromium
# (the HTML report is rendered in it). Installed only when missing; apt-get runs through sudo when not root.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${need[*]} (Debian packages)"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
