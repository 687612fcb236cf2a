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
set -euo pipefail

upstream=${CNNSERVE_LB_UPSTREAM:-server:8001}
refresh_s=${CNNSERVE_LB_REFRESH_S:-2}
host=${upstream%:*}
port=${upstream##*:}
config=/etc/nginx/cnnserve.conf
servers_file=/tmp/cnnserve-upstream.conf  # included by $config

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
