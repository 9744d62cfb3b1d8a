# syntax=docker/dockerfile:1
# The kfcache image: the `kfcache` binary on Debian slim, run as a non-root user (65532).
#
#   docker build -t kfcache .
#
# deploy/ runs it as the `kfcache cron` CronJob (the image name `kfcache` is rewritten in
# deploy/kustomization.yaml). Build caches (registry, target/) are BuildKit cache mounts, so a
# rebuild after a source change recompiles only the workspace's own crates.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The build uses Cargo.lock as it is (--locked), without the `bench` feature: the image carries
# no benchmark code (`kfcache bench` is for a developer's build). SQLite is compiled in (sqlx's
# bundled libsqlite3); TLS is rustls: the binary needs only glibc and the CA certificates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kfcache-cli --no-default-features \
    && install -D -m 0755 target/release/kfcache /out/kfcache

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 kfcache \
    && useradd --uid 65532 --gid 65532 --home-dir /var/lib/kfcache --create-home \
        --shell /usr/sbin/nologin kfcache
COPY --from=build /out/kfcache /usr/local/bin/kfcache
USER 65532:65532
WORKDIR /var/lib/kfcache
# The database and the config file are given explicitly in the cluster (deploy/cronjob.yaml);
# these defaults keep the image usable on its own.
ENV KFCACHE_DB=/var/lib/kfcache/kfcache.db
ENTRYPOINT ["/usr/local/bin/kfcache"]
CMD ["--help"]
