# The API as one image: the `host` runner, spin.toml, the components, their compiled
# (AOT) forms, and the sample book for the keyless index. Hugging Face Spaces builds it as is
# (README front matter: sdk docker, app_port 7860).
#
# Both bases are build arguments so the image can also be built where registries cannot be
# reached, from local bases (see scripts/container-smoke).
ARG BUILDER_BASE=docker.io/library/debian:bookworm-slim
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12

# --- builder -----------------------------------------------------------------------------
FROM ${BUILDER_BASE} AS builder

ARG RUST_TOOLCHAIN=1.95.0
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# rustup and the linker need these; a base that already has them (a rust image) skips apt.
# hadolint ignore=DL3008
RUN if ! command -v curl >/dev/null || ! command -v cc >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# The toolchain the workspace pins (rust-version), with the components' target.
RUN if ! command -v rustup >/dev/null; then \
        curl --proto '=https' --tlsv1.2 -sSf https://static.rust-lang.org/rustup/rustup-init.sh \
            | sh -s -- -y --no-modify-path --profile minimal --default-toolchain none; \
    fi \
    && rustup toolchain install "${RUST_TOOLCHAIN}" --profile minimal --target wasm32-wasip2 \
    && rustup default "${RUST_TOOLCHAIN}" \
    && rustc --version

WORKDIR /src

# Dependencies first, in their own layers: the manifests and the lock file with empty crates,
# so that a change to the sources rebuilds only the workspace's own crates.
COPY Cargo.toml Cargo.lock ./
COPY components/core/Cargo.toml components/core/
COPY components/adapters/Cargo.toml components/adapters/
COPY components/chat/Cargo.toml components/chat/
COPY components/session/Cargo.toml components/session/
COPY components/health/Cargo.toml components/health/
COPY components/openapi/Cargo.toml components/openapi/
COPY components/assets/Cargo.toml components/assets/
COPY host/Cargo.toml host/
COPY tests/guest/Cargo.toml tests/guest/
COPY tests/doubles/Cargo.toml tests/doubles/
COPY tests/load/Cargo.toml tests/load/
RUN for crate in components/core components/adapters components/chat components/session \
                 components/health components/openapi components/assets host tests/guest tests/doubles; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
    && echo 'fn main() {}' > host/src/main.rs \
    && mkdir -p tests/load/src && echo 'fn main() {}' > tests/load/src/main.rs \
    && echo 'fn main() {}' > components/assets/build.rs \
    && cargo fetch --locked \
    && cargo build --locked --release --target wasm32-wasip2 -p health -p chat -p session -p openapi -p assets \
    && cargo build --locked --profile dist -p host

# The sources. Their copies keep the build context's timestamps, which can be older than the
# stub build above: touch them so cargo rebuilds the workspace's crates.
COPY wit wit
COPY openapi.json openapi.json
# The assets component compiles in the widget (web/) and the sample book as its demo pages.
COPY web web
COPY book/docs book/docs
COPY components components
COPY host host
RUN find components host -name '*.rs' -exec touch {} + \
    && cargo build --locked --release --target wasm32-wasip2 -p health -p chat -p session -p openapi -p assets \
    && cargo build --locked --profile dist -p host

# The runtime's tree, assembled here so that the runtime stage needs no shell.
COPY spin.toml /app/spin.toml
COPY book/docs /app/book/docs
RUN mkdir -p /app/target/wasm32-wasip2/release /app/.data /app/cache /home/user \
    && cp target/wasm32-wasip2/release/health.wasm target/wasm32-wasip2/release/chat.wasm \
          target/wasm32-wasip2/release/session.wasm target/wasm32-wasip2/release/openapi.wasm \
          target/wasm32-wasip2/release/assets.wasm \
          /app/target/wasm32-wasip2/release/ \
    && install -m 0755 target/dist/host /usr/local/bin/host

# Ahead-of-time compilation into the cache the server reads at start. The cache key includes
# the engine's settings, so this runs with the same (default) settings as `serve`.
WORKDIR /app
ENV COMPILE_CACHE_DIR=/app/cache
RUN host precompile && host check

# --- runtime -----------------------------------------------------------------------------
FROM ${RUNTIME_BASE}

COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /usr/local/bin/host /usr/local/bin/host
COPY --from=builder --chown=1000:1000 /app /app
COPY --from=builder --chown=1000:1000 /home/user /home/user

# Hugging Face Spaces runs the container as uid 1000. DATA_DIR holds the embedded SQLite
# databases; on a Space with persistent storage set DATA_DIR=/data. The compile cache stays
# in the image (and is rewritten there if the CPU differs from the build machine's).
ENV HOME=/home/user \
    PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    SPIN_MANIFEST=/app/spin.toml \
    DATA_DIR=/app/.data \
    COMPILE_CACHE_DIR=/app/cache \
    PORT=7860 \
    BIND_ADDR=0.0.0.0
USER 1000:1000
WORKDIR /app

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["host", "healthcheck"]
ENTRYPOINT ["host"]
CMD ["serve"]
