# syntax=docker/dockerfile:1
# The operator image: a static (musl) binary on distroless/static, running as non-root
# uid 65532. Build: docker build -t neurallog/tenant-operator:0.1.0 .
# Multi-arch (buildx --platform linux/amd64,linux/arm64) builds natively per platform:
# Alpine's Rust targets musl, so no cross toolchain is needed.

FROM rust:1.95-alpine AS build
# musl-dev: crt and libc for the static link; ring (rustls) compiles a little C and asm.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# jemalloc's build-time options (one arena, small thread caches).
COPY .cargo .cargo
COPY machines machines
COPY migrations migrations
# Workspace members the operator does not link still need their manifests here.
COPY lazyfs lazyfs
COPY auth-stub auth-stub
COPY benches benches
COPY examples examples
COPY src src
# Cache mounts keep the registry and the build between image builds; the binary is copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin neurallog-operator \
 && cp target/release/neurallog-operator /neurallog-operator \
 && mkdir -p /journal-root/var/lib/neurallog-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /neurallog-operator /neurallog-operator
# The journal's mount point, owned by the runtime user for runs without a volume.
COPY --from=build --chown=65532:65532 /journal-root/var/lib/neurallog-operator /var/lib/neurallog-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/neurallog-operator"]
CMD ["run", "--metrics-addr", "0.0.0.0:8080"]
