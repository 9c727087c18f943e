# syntax=docker/dockerfile:1
#
# The distribution-worker image: built on Debian bookworm with the -dev
# packages, run on bookworm-slim with only the runtime libraries.
#
#   docker build -t distribution-worker:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 \
#       -e DIST_KAFKA_BROKERS=... -e DIST_PG_DSN=... distribution-worker:0.1.0
#
# The runtime stage is checked without a Docker engine by the ctest test
# deploy.image (tests/deploy/check_image.sh): every shared library that
# `ldd build/distribution-worker` lists must come from a package installed
# below (or one of their dependencies, or the base image).

# ---- build ------------------------------------------------------------------
FROM debian:bookworm AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        librdkafka-dev libpq-dev libcurl4-openssl-dev libjson-c-dev \
        libconfig-dev libmicrohttpd-dev libcmocka-dev libmimalloc-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the daemon's build reads (.dockerignore keeps the rest out).
COPY CMakeLists.txt ./
COPY include/ include/
COPY src/ src/
COPY tools/ tools/
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build /build --target distribution-worker -j"$(nproc)" \
 && strip /build/distribution-worker \
 && /build/distribution-worker --version

# ---- run --------------------------------------------------------------------
FROM debian:bookworm-slim

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="distribution-worker" \
      org.opencontainers.image.description="Posts distribution requests from Kafka to six channel APIs" \
      org.opencontainers.image.version="${VERSION}"

# Runtime libraries only: one per -dev package of the build stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        librdkafka1 libpq5 libcurl4 libjson-c5 libconfig9 libmicrohttpd12 \
        libmimalloc2.0 \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root user (Kubernetes runAsUser matches it); no home, no shell.
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin worker

COPY --from=build /build/distribution-worker /usr/local/bin/distribution-worker
# The reference configuration; Kubernetes mounts its ConfigMap over this path.
COPY conf/distribution-worker.conf /etc/distribution-worker/distribution-worker.conf

# Nothing is written outside /tmp (mount an emptyDir or tmpfs there), so the
# root filesystem can be read-only. HOME points nowhere: libpq finds no
# ~/.pgpass or ~/.postgresql/root.crt; give sslrootcert explicitly.
ENV HOME=/nonexistent \
    TMPDIR=/tmp

USER 10001:10001
EXPOSE 8080
# The worker drains on SIGTERM (CONTRACT section 5); Kubernetes probes
# /healthz and /readyz, so no HEALTHCHECK here.
STOPSIGNAL SIGTERM
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/distribution-worker"]
CMD ["-c", "/etc/distribution-worker/distribution-worker.conf"]
