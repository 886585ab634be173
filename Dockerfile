# Keygate: a static binary on distroless, running as non-root.
# examples/dockerfile_test.go runs the go build line below and checks what
# this file promises (static binary, non-root user, /data volume, health).
FROM golang:1.26 AS build
# Stamped into `keygate version`: docker build --build-arg VERSION=$(git describe --tags)
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: distroless/static has no libc, so the binary must not need one.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/keygate ./cmd/keygate && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
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
    KEYGATE_HTTP_LISTEN=0.0.0.0:9002
# 9001: gRPC ext_authz (Envoy grpc_service, Istio envoyExtAuthzGrpc) and
# grpc.health.v1; 9002: HTTP authorization (Envoy http_service, nginx,
# Traefik, Caddy). The admin API stays on loopback unless
# KEYGATE_ADMIN_LISTEN and KEYGATE_ADMIN_TOKEN (or KEYGATE_ADMIN_TOKEN_FILE)
# are both set.
EXPOSE 9001 9002
USER nonroot:nonroot
# No shell or curl here: the binary probes its own gRPC health service
# (on KEYGATE_GRPC_LISTEN, loopback when that is 0.0.0.0) and exits 0 or 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/keygate", "health"]
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
