#!/bin/sh
# Compose's one-shot `tls-init` step: the cluster CA and a certificate per fixed service in the
# `tls` volume (/tls). Node agents issue their own at start (replica-env.sh), named after their
# NODE_ID, since replicas only learn their identity when they run. Idempotent: an existing CA is
# kept, certificates are issued again.
set -eu
issue() { node --import tsx deploy/certs-main.ts /tls "$@"; }
issue coordinator-1 coordinator coordinator-1,localhost 127.0.0.1
issue coordinator-2 coordinator coordinator-2,localhost 127.0.0.1
issue uploader uploader uploader
issue cli client tessera-cli
# The CA key stays in the volume: node agents (same project, same host) sign their own
# certificates with it. For a multi-host deployment use cert-manager (deploy/k8s/tls.yaml).
chmod 0644 /tls/*.crt
