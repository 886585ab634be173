# Keygate: a static binary on distroless, running as non-root.
# examples/dockerfile_test.go runs the go build line below and checks what
# this file promises (static binary, non-root user, /data volume, health,
# cross-compiled platforms, labels).
#
# Multi-arch without emulation: the build stage runs on the builder's own
# platform and Go cross-compiles for each target, so
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=$(git describe --tags) --build-arg REVISION=$(git rev-parse HEAD) .
# never runs the compiler under QEMU.

# Stamped into `keygate version` and the image's labels. The build context
# leaves .git out (.dockerignore), so the commit can only come from here.
ARG VERSION=dev
ARG REVISION=

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
# Set by buildx for each --platform; empty with a plain docker build, which
# leaves go build on the builder's own platform.
ARG TARGETOS TARGETARCH
ARG VERSION REVISION
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: distroless/static has no libc, so the binary must not need
# one (and cross-compiling needs no C toolchain). -buildvcs=false: there is
# no .git here to read; REVISION stands in for it.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/keygate ./cmd/keygate && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION REVISION
LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="API-key authorization for Envoy and Istio (ext_authz)" \
      org.opencontainers.image.source="https://github.com/keygate/keygate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/keygate /usr/local/bin/keygate
# distroless has no shell to mkdir with: bring /data owned by nonroot.
COPY --from=build --chown=65532:65532 /out/data /data
# The store (and a generated admin token) live on this volume.
VOLUME /data
# Working in /data puts the CLI's default token file (./keygate.admin-token)
# where serve generates it, beside the store: `docker exec CONTAINER keygate
# tenants list` works with no token flag.
WORKDIR /data
ENV KEYGATE_STORE=/data/keygate.db \
    KEYGATE_GRPC_LISTEN=0.0.0.0:9001 \
    KEYGATE_HTTP_LISTEN=0.0.0.0:9002 \
    KEYGATE_METRICS_LISTEN=0.0.0.0:9004
# 9001: gRPC ext_authz (Envoy grpc_service, Istio envoyExtAuthzGrpc) and
# grpc.health.v1; 9002: HTTP authorization (Envoy http_service, nginx,
# Traefik, Caddy); 9004: the metrics listener, which serves GET /metrics and
# nothing else, set to 0.0.0.0:9004 here (its default is loopback) because
# a scraper outside the container could not reach it otherwise
# (metrics.require_token puts it behind a token; "off" removes it). The
# admin API stays on loopback unless KEYGATE_ADMIN_LISTEN and
# KEYGATE_ADMIN_TOKEN (or KEYGATE_ADMIN_TOKEN_FILE) are both set.
EXPOSE 9001 9002 9004
USER nonroot:nonroot
# No shell or curl here: the binary probes its own gRPC health service
# (on KEYGATE_GRPC_LISTEN, loopback when that is 0.0.0.0) and exits 0 or 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/keygate", "health"]
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
