# syntax=docker/dockerfile:1
# Multi-stage: a static binary, run as a non-root user, with tini as PID 1
# so that orphaned grandchildren of exec'd commands are reaped.

# The web terminal: npm ci (versions from package-lock.json), then esbuild.
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=web /src/web/dist ./web/dist
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/gateway ./cmd/gateway

# A Debian base, not scratch: the default container runs a login shell, and
# people exec shells and tools into it.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /bin/bash gateway
COPY --from=build /out/gateway /usr/local/bin/gateway
USER gateway
WORKDIR /home/gateway
# Listening beyond loopback requires a token: docker run -e GATEWAY_TOKEN=...
ENV GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gateway"]
