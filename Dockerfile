# syntax=docker/dockerfile:1
# sluice images. The default target carries every binary (sluice-controller, sluice-dataplane and the example
# backend sluice-echo); the Helm chart and the kind suite pick one by command. One image per component:
#   docker build -t sluice:dev .                                  # all binaries
#   docker build --target controller -t sluice-controller:dev .   # the controller only
#   docker build --target dataplane  -t sluice-dataplane:dev .    # the data plane only
# The runtime is distroless (glibc, CA certificates, no shell) and runs as the unprivileged user 65532.

ARG RUST_VERSION=1.95
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-bookworm AS build
# etcd-client's build script compiles the etcd protobufs with protoc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY model model
COPY etcd etcd
COPY controller controller
COPY dataplane dataplane
COPY crds crds
COPY testkit testkit
COPY e2e e2e
COPY bench bench
# The caches keep the registry and the build directory between builds; the binaries are copied out of the
# cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-controller -p sluice-dataplane -p sluice-testkit --bins \
 && mkdir -p /out \
 && cp target/release/sluice-controller target/release/sluice-dataplane target/release/sluice-echo target/release/sluice-load /out/

FROM ${RUNTIME_IMAGE} AS controller
COPY --from=build /out/sluice-controller /usr/local/bin/
USER 65532:65532
EXPOSE 9092
ENTRYPOINT ["sluice-controller"]

FROM ${RUNTIME_IMAGE} AS dataplane
COPY --from=build /out/sluice-dataplane /usr/local/bin/
USER 65532:65532
EXPOSE 9080 9091
ENTRYPOINT ["sluice-dataplane"]

FROM ${RUNTIME_IMAGE} AS all
COPY --from=build /out/sluice-controller /out/sluice-dataplane /out/sluice-echo /out/sluice-load /usr/local/bin/
USER 65532:65532
EXPOSE 9080 9091 9092
ENTRYPOINT []
CMD ["sluice-dataplane"]
