#!/usr/bin/env bash
# Run the local compose cluster (deploy/compose/docker-compose.yml) for a user.
#
#   deploy/scripts/docker-cluster.sh up      # start, wait until every service is healthy
#   deploy/scripts/docker-cluster.sh down    # stop, remove containers + network (volumes kept)
#   deploy/scripts/docker-cluster.sh cli ARGS...
#       run the shoal CLI in a throw-away container on the cluster network, with
#       the current directory mounted at /work (e.g. `cli put /work/f`, `cli ls`);
#       the host cannot reach the tracker and peers by their compose names.
#       The trace sink's file is mounted too: `cli trace NAME` prints a put's spans.
#   deploy/scripts/docker-cluster.sh ps|logs|config|<any compose subcommand> [args]
#
# Environment:
#   SHOAL_COMPOSE_PROJECT  compose project name          (default shoal)
#   SHOAL_VERSION          image tag                     (default latest)
#   SHOAL_OTLP_ENDPOINT    where spans go (cluster and `cli`; default
#                          http://trace-sink:4317, empty: no export)
#   COMPOSE                compose command               (default: `docker compose` if
#                                                        present, else docker-compose)
#   plus the variables documented at the top of the compose file (ports, ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FILE="$ROOT/deploy/compose/docker-compose.yml"
PROJECT="${SHOAL_COMPOSE_PROJECT:-shoal}"
export SHOAL_VERSION="${SHOAL_VERSION:-latest}"

if [[ -n ${COMPOSE:-} ]]; then
  read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "docker-cluster: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
compose+=(-p "$PROJECT" -f "$FILE")

cmd="${1:-up}"
shift || true
case "$cmd" in
  up)
    missing=()
    for svc in tracker peer webserver; do
      docker image inspect "shoal-$svc:$SHOAL_VERSION" >/dev/null 2>&1 || missing+=("shoal-$svc:$SHOAL_VERSION")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
      echo "docker-cluster: missing images: ${missing[*]} (run: make images)" >&2
      exit 1
    fi
    "${compose[@]}" up -d "$@"
    # docker-compose 1.29 has no --wait: poll the health of every container.
    deadline=$((SECONDS + ${SHOAL_UP_TIMEOUT:-120}))
    while :; do
      states=$(for id in $("${compose[@]}" ps -q); do
                 docker inspect -f '{{.Name}} {{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id"
               done)
      if ! grep -qv ' running/healthy$' <<<"$states"; then
        echo "docker-cluster: all services healthy"
        echo "  gRPC  127.0.0.1:${SHOAL_WEBSERVER_GRPC_PORT:-50051}   HTTP  http://127.0.0.1:${SHOAL_WEBSERVER_HTTP_PORT:-8080}"
        exit 0
      fi
      if ((SECONDS >= deadline)); then
        echo "docker-cluster: not healthy in time:" >&2
        grep -v ' running/healthy$' <<<"$states" >&2
        exit 1
      fi
      sleep 1
    done
    ;;
  cli)
    id=$("${compose[@]}" ps -q tracker)
    [[ -n $id ]] || { echo "docker-cluster: the cluster is not running (make up)" >&2; exit 1; }
    net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$id" | awk '{print $1}')
    tty=()
    [[ -t 0 && -t 1 ]] && tty=(-t)
    # With the trace sink running: its volume is mounted read-only so that
    # `shoal trace NAME` reads its file (group 10001 may enter the 0750 directory),
    # and the CLI exports its own spans to it (unless SHOAL_OTLP_ENDPOINT is empty).
    traces=()
    sink=$("${compose[@]}" ps -q trace-sink 2>/dev/null || true)
    if [[ -n $sink && $(docker inspect -f '{{.State.Running}}' "$sink" 2>/dev/null) == true ]]; then
      traces=(--volumes-from "$sink:ro" --group-add 10001
              -e SHOAL_TRACE_FILE=/var/lib/shoal/traces.jsonl)
      otlp="${SHOAL_OTLP_ENDPOINT-http://trace-sink:4317}"
      if [[ -n $otlp ]]; then
        traces+=(-e "OTEL_EXPORTER_OTLP_ENDPOINT=$otlp" -e OTEL_BSP_SCHEDULE_DELAY=200
                 -e OTEL_RESOURCE_ATTRIBUTES=service.instance.id=cluster-cli)
      fi
    fi
    exec docker run --rm -i "${tty[@]}" --network "$net" -v "$PWD:/work" -w /work \
      --user "$(id -u):$(id -g)" -e HOME=/tmp "${traces[@]}" --entrypoint shoal "shoal-peer:$SHOAL_VERSION" \
      --endpoint http://webserver:50051 "$@"
    ;;
  down)
    exec "${compose[@]}" down --remove-orphans "$@"
    ;;
  *)
    exec "${compose[@]}" "$cmd" "$@"
    ;;
esac
