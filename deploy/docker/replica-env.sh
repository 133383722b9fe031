#!/bin/sh
# Entrypoint for replicated Compose services (deploy.replicas / `docker compose up --scale`).
# Compose gives every replica the same environment, so the per-container identity is derived
# here, the way the Kubernetes manifests do it with the downward API:
#   NODE_ID            the container hostname (its short id)      unless already set
#   ADVERTISE_ADDRESS  <container IP>:$GRPC_PORT                   unless already set
# then runs `node --import tsx <script>` with the arguments given (e.g. node-agent/main.ts).
set -eu

host="${HOSTNAME:-$(cat /etc/hostname)}"
: "${GRPC_PORT:?GRPC_PORT must be set}"

# Docker writes "<ip> <hostname>" for the container into /etc/hosts; fall back to the
# hostname, which Docker's embedded DNS also resolves on the project network.
ip="$(getent hosts "$host" | { read -r addr _rest || true; echo "${addr:-}"; })"
case "$ip" in 127.*|::1) ip="" ;; esac   # a loopback answer is useless to other containers

export NODE_ID="${NODE_ID:-$host}"
export ADVERTISE_ADDRESS="${ADVERTISE_ADDRESS:-${ip:-$host}:$GRPC_PORT}"

# TLS_SELF_ISSUE=true: this replica's certificate (role node, named after its NODE_ID, which the
# coordinator checks) from the CA tls-init made in /tls.
if [ "${TLS_SELF_ISSUE:-}" = "true" ]; then
  node --import tsx deploy/certs-main.ts /tls "node-$NODE_ID" node "$NODE_ID" ${ip:+"$ip"} >/dev/null
  export TLS_CERT_FILE="/tls/node-$NODE_ID.crt" TLS_KEY_FILE="/tls/node-$NODE_ID.key"
fi

exec node --import tsx "$@"
