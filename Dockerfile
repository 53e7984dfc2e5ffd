# Builds every sluice binary in one image; the Helm chart and the kind suite pick the one to run by command.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
COPY --from=build /src/target/release/sluice-controller /src/target/release/sluice-dataplane /src/target/release/sluice-echo /usr/local/bin/
USER 65532:65532
ENTRYPOINT []
CMD ["sluice-dataplane"]
