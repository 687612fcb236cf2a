# nginx as the L7 gRPC load balancer of docker-compose.yml (configuration: docker/lb/nginx.conf).
# BASE_IMAGE is any Debian/Ubuntu image with an apt source (docker/build-local-base.sh makes one without a registry):
# nginx-light is installed unless the base already has nginx.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cnnserve-lb" \
      org.opencontainers.image.description="nginx gRPC (HTTP/2) load balancer in front of the cnnserve replicas" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN if ! command -v nginx >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10002 cnnserve-lb \
    && useradd --system --uid 10002 --gid cnnserve-lb --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cnnserve-lb
COPY docker/lb/nginx.conf /etc/nginx/cnnserve.conf
COPY docker/lb/entrypoint.sh /usr/local/bin/cnnserve-lb
USER 10002:10002
# Fails the build on a configuration error instead of at `docker compose up` (with a stand-in replica list; as the
# user that runs nginx, so the temporary folders it creates under /tmp are its own).
RUN echo "server 127.0.0.1:8001;" > /tmp/cnnserve-upstream.conf \
    && echo "listen 8001 http2;" > /tmp/cnnserve-listen.conf \
    && nginx -t -q -c /etc/nginx/cnnserve.conf \
    && rm /tmp/cnnserve-upstream.conf /tmp/cnnserve-listen.conf /tmp/nginx.pid
EXPOSE 8001
STOPSIGNAL SIGQUIT
# The balancer accepts connections (bash's /dev/tcp: no client tools in the image). Whether a replica answers is the
# replicas' own health check; ask grpc.health.v1 through the balancer to see both.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8001"]
ENTRYPOINT ["cnnserve-lb"]
