# Build stage: the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY src src
# The workspace's other members (the client and the load generator): Cargo reads every member's
# manifest, though only the server is built.
COPY crates crates
RUN cargo build --release --locked --bin ephemera

# Runtime stage: the binary, the web client, an unprivileged user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home ephemera \
 && mkdir -p /data && chown ephemera /data
COPY --from=build /src/target/release/ephemera /usr/local/bin/ephemera
COPY static /app/static
USER ephemera
ENV EPHEMERA_BIND=0.0.0.0:8080 \
    EPHEMERA_STATIC_DIR=/app/static \
    EPHEMERA_DATA_DIR=/data
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["ephemera"]
