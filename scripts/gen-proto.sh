#!/usr/bin/env bash
# Regenerates proto/gen from proto/tessera/v1/*.proto with ts-proto.
# Besides the grpc-js stubs, generic definitions: each method with its options (idempotency_level,
# which the SDK reads to decide what it may retry).
# --check: generate into a temp dir and fail if it differs from the committed output (drift).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protoc is missing: sudo apt-get install -y protobuf-compiler" >&2; exit 1
  fi
fi
out=proto/gen
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); fi
mkdir -p "$out"
protoc \
  --plugin=protoc-gen-ts_proto=./node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out="$out" \
  --ts_proto_opt=outputServices=grpc-js,outputServices=generic-definitions,env=node,esModuleInterop=true,importSuffix=.js,forceLong=number,useOptionals=none,stringEnums=true,oneof=unions \
  -I proto proto/tessera/v1/*.proto
if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" proto/gen >/dev/null; then
    diff -r "$out" proto/gen | head -20 >&2
    echo "proto/gen is out of date: run npm run proto and commit" >&2; rm -rf "$out"; exit 1
  fi
  rm -rf "$out"; echo "proto/gen is up to date"
fi
