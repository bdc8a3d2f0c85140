# mintproxy in a container: built from source, run as a non-root user on a distroless base
# (glibc and CA certificates, no shell, no package manager).
#
#   docker build -t mintproxy .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/sa.json:/keys/sa.json:ro" \
#     -e MINTPROXY_KEY_FILE=/keys/sa.json \
#     -e MINTPROXY_UPSTREAM=https://my-instance.zitadel.cloud \
#     mintproxy
#
# The default command listens on 0.0.0.0:8080 (proxy) and 0.0.0.0:9090 (admin: /healthz,
# /readyz, /metrics). The proxy still checks the Host header: it accepts localhost,
# 127.0.0.1 and [::1] on port 8080, so publish it as 8080, and behind a Service add its
# DNS name, e.g. `serve ... --allow-host mintproxy.iam.svc.cluster.local`. Whoever
# reaches the proxy acts as the service user: keep it behind a NetworkPolicy or firewall.

FROM rust:slim-bookworm AS build
WORKDIR /src
COPY . .
# The same build CI runs; the cache mounts only keep crates and objects between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/mintproxy /usr/local/bin/mintproxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/mintproxy /usr/local/bin/mintproxy
# uid/gid 65532 ("nonroot"); numeric so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["mintproxy"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--allow-remote", "--admin-listen", "0.0.0.0:9090"]
