#!/usr/bin/env bash
# Smoke test of a built server image with plain Docker (CI services have Docker,
# not podman): a dev agent answers /v1/status/leader and passes the image's
# health check, `docker stop` ends it with exit code 0, and `tls ca create`
# writes into a mounted directory. Containers use --network host (the agent
# binds 127.0.0.1 only) or --network none, and are removed at the end.
#
# usage: tools/container/docker-smoke.sh IMAGE
set -euo pipefail
image=${1:?usage: $0 IMAGE}
name="wanfed-smoke-$$"
http_port=${WANFED_SMOKE_HTTP_PORT:-18500}
out=$(mktemp -d)

cleanup() {
    docker rm --force --volumes "$name" >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT

echo "image size: $(docker image inspect --format '{{.Size}}' "$image") bytes"

echo "dev agent on 127.0.0.1:$http_port"
docker run --detach --name "$name" --network host \
    --env "WANFED_HTTP_ADDR=127.0.0.1:$http_port" \
    "$image" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$http_port" \
    -server-port 0 -serf-wan-port 0 >/dev/null
leader=""
for _ in $(seq 1 120); do
    leader=$(python3 -c "import json,sys,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$http_port/v1/status/leader', timeout=2)))" 2>/dev/null || true)
    [ -n "$leader" ] && break
    sleep 0.5
done
if [ -z "$leader" ]; then
    docker logs "$name"
    echo "no leader from the dev agent" >&2
    exit 1
fi
echo "leader: $leader"
docker exec "$name" /opt/wanfed/bin/python /opt/wanfed/libexec/healthcheck.py
docker stop --time 30 "$name" >/dev/null
code=$(docker inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { docker logs "$name"; echo "agent exited $code after SIGTERM" >&2; exit 1; }
echo "stopped by SIGTERM with exit code 0"

echo "tls ca create into a mounted directory"
chown 10001:10001 "$out" 2>/dev/null || sudo chown 10001:10001 "$out"
docker run --rm --network none --volume "$out:/wanfed/tls" --workdir /wanfed/tls \
    "$image" tls ca create
test -s "$out/wanfed-agent-ca.pem"
test -s "$out/wanfed-agent-ca-key.pem"
echo "smoke test passed"
