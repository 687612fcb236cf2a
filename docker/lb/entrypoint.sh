#!/bin/bash
# Run nginx as the gRPC balancer and keep its list of replicas equal to what Docker's DNS says `server` is.
#
# Why not nginx's own `resolver` with a variable in grpc_pass: nginx then builds a fresh upstream for every request
# from the cached answer and always starts at its first address, so for the whole cache lifetime every call goes
# to one replica (measured: 7 then 5 consecutive calls to the same one). An `upstream` block round-robins per call,
# keeps HTTP/2 connections to the replicas open and takes a failing one out for fail_timeout, but is resolved only
# when nginx (re)loads its configuration; open-source nginx before 1.27.3 cannot re-resolve it by itself. So this
# script looks the name up every CNNSERVE_LB_REFRESH_S seconds and reloads nginx (gracefully: calls in flight
# finish on the old workers) when the set of addresses changed, which is how `docker compose up --scale` and a
# stopped replica reach the balancer.
#
#   CNNSERVE_LB_UPSTREAM   name:port of the replicas (default server:8001: the compose service)
#   CNNSERVE_LB_REFRESH_S  seconds between lookups (default 2)
#   CNNSERVE_LB_TLS        off (default: plaintext gRPC on 8001) or on: TLS with $tls_dir/tls.crt and tls.key (the
#                          names of a Kubernetes TLS secret); when $tls_dir/ca.crt exists too, every client must
#                          present a certificate signed by it (mutual TLS, verified here)
set -euo pipefail

upstream=${CNNSERVE_LB_UPSTREAM:-server:8001}
refresh_s=${CNNSERVE_LB_REFRESH_S:-2}
host=${upstream%:*}
port=${upstream##*:}
config=/etc/nginx/cnnserve.conf
servers_file=/tmp/cnnserve-upstream.conf  # included by $config
listen_file=/tmp/cnnserve-listen.conf  # included by $config
tls_dir=/etc/cnnserve-lb/tls

write_listen() {  # plaintext, TLS or mutual TLS on 8001, from CNNSERVE_LB_TLS and the files in $tls_dir
    case "${CNNSERVE_LB_TLS:-off}" in
        off|"")
            echo "listen 8001 http2;" > "$listen_file"
            echo "entrypoint: plaintext gRPC on 8001" >&2
            return ;;
        on) ;;
        *) echo "entrypoint: CNNSERVE_LB_TLS must be on or off, got '$CNNSERVE_LB_TLS'" >&2; exit 3 ;;
    esac
    local file
    for file in tls.crt tls.key; do
        if [ ! -r "$tls_dir/$file" ]; then
            echo "entrypoint: CNNSERVE_LB_TLS=on needs a readable $tls_dir/$file (mount CNNSERVE_LB_TLS_DIR)" >&2
            exit 3
        fi
    done
    {
        echo "listen 8001 ssl http2;"
        echo "ssl_certificate $tls_dir/tls.crt;"
        echo "ssl_certificate_key $tls_dir/tls.key;"
        echo "ssl_protocols TLSv1.2 TLSv1.3;"
        if [ -r "$tls_dir/ca.crt" ]; then
            # Verified here, refused with HTTP 401, which gRPC clients read as UNAUTHENTICATED. ("on" would
            # answer HTTP 400 after the TLS 1.3 handshake, which they read as INTERNAL.)
            echo "ssl_client_certificate $tls_dir/ca.crt;"
            echo "ssl_verify_client optional_no_ca;"
            echo 'if ($ssl_client_verify != SUCCESS) { return 401; }'
        fi
    } > "$listen_file"
    if [ -r "$tls_dir/ca.crt" ]; then
        echo "entrypoint: TLS on 8001, client certificates signed by $tls_dir/ca.crt required" >&2
    else
        echo "entrypoint: TLS on 8001" >&2
    fi
}

addresses() {  # the IPv4 addresses of $host, sorted, one per line; nothing while it does not resolve
    getent ahostsv4 "$host" | awk '{print $1}' | sort -u || true
}

write_servers() {  # $1: addresses
    local address
    {
        echo "# Written by entrypoint.sh from the DNS name $host; do not edit."
        if [ -z "$1" ]; then
            # No replica: nginx needs one server; a closed port makes every call fail fast (UNAVAILABLE).
            echo "server 127.0.0.1:9 down;"
        fi
        for address in $1; do
            # One failed connection takes the replica out for 5 s; the call itself goes to the next one.
            echo "server $address:$port max_fails=1 fail_timeout=5s;"
        done
    } > "$servers_file.new"
    mv "$servers_file.new" "$servers_file"
}

write_listen
current=$(addresses)
write_servers "$current"
echo "entrypoint: $upstream -> ${current//$'\n'/ }" >&2
nginx -c "$config" -g 'daemon off;' &
nginx_pid=$!
# docker stop sends SIGQUIT (the image's STOPSIGNAL): nginx's graceful shutdown.
trap 'kill -QUIT "$nginx_pid" 2>/dev/null' QUIT TERM INT

while kill -0 "$nginx_pid" 2>/dev/null; do
    sleep "$refresh_s" & wait $! || true
    latest=$(addresses)
    if [ "$latest" != "$current" ]; then
        echo "entrypoint: $upstream -> ${latest//$'\n'/ } (was ${current//$'\n'/ }); reloading" >&2
        write_servers "$latest"
        nginx -c "$config" -s reload || echo "entrypoint: reload failed; keeping the previous replicas" >&2
        current=$latest
    fi
done
wait "$nginx_pid"
