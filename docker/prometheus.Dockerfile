# Prometheus for docker-compose.yml (configuration: docker/prometheus/prometheus.yml).
# BASE_IMAGE is any Debian/Ubuntu image with an apt source (docker/build-local-base.sh makes one without a registry):
# Debian's prometheus package is installed unless the base already has it.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cnnserve-prometheus" \
      org.opencontainers.image.description="Prometheus scraping every cnnserve replica" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN if ! command -v prometheus >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    # 212 MB of raw time-zone data the web UI never loads (it uses moment-timezone-with-data.min.js).
    && rm -rf /usr/share/javascript/moment-timezone/data /usr/share/doc/* \
    && mkdir -p /prometheus && chown 65534:65534 /prometheus
COPY docker/prometheus/prometheus.yml /etc/prometheus/cnnserve.yml
RUN promtool check config /etc/prometheus/cnnserve.yml
USER 65534:65534
EXPOSE 9090
VOLUME ["/prometheus"]
# GET /-/healthy with bash's /dev/tcp (the image has no HTTP client; Debian's promtool 2.42 has no `check healthy`).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /-/healthy HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["prometheus", "--config.file=/etc/prometheus/cnnserve.yml", "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=7d", "--web.listen-address=:9090"]
