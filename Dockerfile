# Keygate: a static binary on distroless, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/keygate ./cmd/keygate && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keygate /usr/local/bin/keygate
# distroless has no shell to mkdir with: bring /data owned by nonroot.
COPY --from=build --chown=65532:65532 /out/data /data
# The store (and a generated admin token) live on this volume.
VOLUME /data
ENV KEYGATE_STORE=/data/keygate.db \
    KEYGATE_GRPC_LISTEN=0.0.0.0:9001
# The admin API stays on loopback unless KEYGATE_ADMIN_LISTEN and
# KEYGATE_ADMIN_TOKEN (or KEYGATE_ADMIN_TOKEN_FILE) are both set.
EXPOSE 9001
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
