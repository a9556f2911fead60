# The scheduler binary plus the example project (modules, sequences).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin scheduler

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/scheduler /usr/local/bin/scheduler
WORKDIR /srv/etl
COPY modules.json ./
COPY modules ./modules
COPY etl_sequences ./etl_sequences
COPY conf ./conf
ENV SCHEDULER_PROJECT=/srv/etl
CMD ["scheduler", "worker"]
