# syntax=docker/dockerfile:1
# Multi-stage build of both binaries (webchat, webchat-profile); the web client is built into
# webchat, so the image needs no copy of its files.
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependency layer: build every workspace member against stub sources, so this layer is cached
# until a Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY loadgen/Cargo.toml loadgen/Cargo.toml
COPY profile-service/Cargo.toml profile-service/Cargo.toml
RUN for dir in . loadgen profile-service; do \
        mkdir -p "$dir/src" && echo 'fn main() {}' > "$dir/src/main.rs" && touch "$dir/src/lib.rs"; \
    done \
    && cargo build --release -p webchat -p webchat-profile \
    && rm -rf src loadgen/src profile-service/src
COPY build.rs build.rs
COPY src src
COPY webclient webclient
COPY loadgen/src loadgen/src
COPY profile-service/src profile-service/src
RUN touch src/main.rs src/lib.rs profile-service/src/main.rs profile-service/src/lib.rs \
    && cargo build --release -p webchat -p webchat-profile

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/webchat webchat \
    && mkdir -p /var/lib/webchat && chown webchat /var/lib/webchat
COPY --from=build /src/target/release/webchat /src/target/release/webchat-profile /usr/local/bin/
USER webchat
ENV WEBCHAT_LISTEN=0.0.0.0:4000 \
    WEBCHAT_PROFILE_LISTEN=0.0.0.0:4040 \
    WEBCHAT_DATA_DIR=/var/lib/webchat
EXPOSE 4000 4040
VOLUME /var/lib/webchat
# The chat server's check; the profile service's container overrides it (see compose).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:4000/health || exit 1
ENTRYPOINT ["/usr/local/bin/webchat"]
