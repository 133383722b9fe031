# syntax=docker/dockerfile:1
#
# One image for every Tessera process. The role is the script passed to the entrypoint:
#   docker run tessera                          -> coordinator/main.ts (default)
#   docker run tessera node-agent/main.ts
#   docker run tessera uploader/main.ts
# TypeScript runs directly through tsx (a runtime dependency), so there is no build step.
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    INPUT_ROOT=/data/input \
    STAGING_DIR=/var/lib/tessera

# ffmpeg/ffprobe for the transcoder; ca-certificates for https S3 endpoints and http(s) inputs;
# openssl for Compose's TLS init step (deploy/docker/tls-init.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates openssl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first so the layer is reused while only sources change.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

COPY . .

# The code stays root-owned (read-only for the service user); only the data directories are
# the service user's. Named volumes mounted on these paths inherit that ownership.
RUN mkdir -p /data/input /var/lib/tessera /tls \
 && chown node:node /data/input /var/lib/tessera /tls

# "node" (uid/gid 1000) is the unprivileged user that ships with the base image.
USER node

# gRPC: coordinator 7400, node agent 7500, uploader 7600; metrics/health: 9400/9500/9600.
EXPOSE 7400 7500 7600 9400 9500 9600

ENTRYPOINT ["node", "--import", "tsx"]
CMD ["coordinator/main.ts"]
