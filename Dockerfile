# syntax=docker/dockerfile:1
# Multi-stage build of the webchat chat server with its web client.
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependency layer: build against stub sources so it is cached until Cargo.toml/lock change.
COPY Cargo.toml Cargo.lock ./
COPY loadgen/Cargo.toml loadgen/Cargo.toml
RUN mkdir -p src loadgen/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > loadgen/src/main.rs && touch loadgen/src/lib.rs \
    && cargo build --release --bin webchat && rm -rf src loadgen/src
COPY src src
COPY loadgen/src loadgen/src
RUN touch src/main.rs src/lib.rs && cargo build --release --bin webchat

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/webchat webchat \
    && mkdir -p /var/lib/webchat && chown webchat /var/lib/webchat
COPY --from=build /src/target/release/webchat /usr/local/bin/webchat
COPY webclient /usr/share/webchat/webclient
USER webchat
ENV WEBCHAT_LISTEN=0.0.0.0:4000 \
    WEBCHAT_DATA_DIR=/var/lib/webchat \
    WEBCHAT_WEBCLIENT_DIR=/usr/share/webchat/webclient
EXPOSE 4000
VOLUME /var/lib/webchat
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:4000/health || exit 1
ENTRYPOINT ["/usr/local/bin/webchat"]
