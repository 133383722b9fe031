#!/usr/bin/env bash
# Makes a fresh clone runnable: npm packages, and ffmpeg/ffprobe/etcd from the OS packages.
# Idempotent and quiet when everything is already there. `--npm-only`: the npm packages alone (the
# static checks: typecheck, lint, generated code, which need no ffmpeg or etcd).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
if [ "${1:-}" != "--npm-only" ]; then
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # TLS tests and `tessera up --tls`
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing OS packages: $pkgs" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "installing OS packages with sudo: $pkgs" >&2
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "Tessera needs: $pkgs. Install them with:  sudo apt-get install -y $pkgs" >&2
    exit 1
  fi
fi
fi

# npm packages: install when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages…" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
