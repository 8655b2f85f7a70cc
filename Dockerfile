# The alertflow binary in a slim image (README, "Running a cluster"). Kept minimal: it has not
# been built on the development machines, which reach package registries but not container
# registries.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# rdkafka builds its bundled librdkafka with make and gcc, both in the build image.
RUN cargo build --release --locked --bin alertflow

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data alertflow
COPY --from=build /src/target/release/alertflow /usr/local/bin/alertflow
USER alertflow
EXPOSE 2101 8080 5433
ENTRYPOINT ["alertflow"]
CMD ["--help"]
