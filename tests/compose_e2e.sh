#!/usr/bin/env bash
# End-to-end test of docker-compose.yml: a three-node raftgres cluster behind HAProxy, in Docker.
#
#   1. make the base image (cached by tag), build the release binary, `compose up -d --build`;
#   2. wait for one primary and two streaming replicas, write through HAProxy's primary port (5000),
#      read through its replica port (5001);
#   3. `docker kill` the primary: writes through port 5000 must succeed again within a bound;
#      start it again: it must rejoin as a replica;
#   4. `docker network disconnect` the new primary: it must demote and another node take over;
#      reconnect it: it must rejoin as a replica;
#   5. `compose down -v` (always, from the EXIT trap), then print a summary with timings.
#
# Usage: tests/compose_e2e.sh          (run by tests/compose_e2e.rs under `cargo test`)
# Exit status: 0 passed, 77 skipped (the reason is printed), anything else failed.
# Environment:
#   RAFTGRES_SKIP_COMPOSE_E2E=1   skip
#   RAFTGRES_E2E_TIMEOUT=SECONDS  overall bound (default 1200: on a clean clone the base image and the release
#                                 build take 3 + 5 minutes on two cores); every wait has its own bound too
#   RAFTGRES_BASE_IMAGE=IMAGE     base image to build on (default: raftgres-base:bookworm, made by
#                                 docker/scripts/make-base-image.sh; debian:bookworm-slim works with a registry)
#   RAFTGRES_E2E_KEEP=1           leave the cluster running at the end (no `down -v`)
# It uses its own compose project (raftgres-e2e), image tag (raftgres:e2e), random passwords and
# random host ports, and never reads the .env file of the checkout.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."

readonly SKIP=77
readonly PROJECT=raftgres-e2e
readonly NODES=(node1 node2 node3)
readonly TIMEOUT=${RAFTGRES_E2E_TIMEOUT:-1200}
readonly START=$EPOCHREALTIME
readonly DEADLINE=$((SECONDS + TIMEOUT))

elapsed() { awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "compose-e2e [$(elapsed)s] $*"; }
skip() {
    echo "compose-e2e: SKIP: $*"
    exit "$SKIP"
}
fail() {
    log "FAIL: $*"
    exit 1
}

SUMMARY=()
record() {
    SUMMARY+=("$(printf '  %-34s %s' "$1" "$2")")
    log "$1: $2"
}

# ---------------------------------------------------------------------------------------------
# Preconditions: each missing one is a skip with its reason, never a failure.

[[ ${RAFTGRES_SKIP_COMPOSE_E2E:-} == 1 ]] && skip "RAFTGRES_SKIP_COMPOSE_E2E=1"
command -v docker >/dev/null || skip "no docker command on PATH"
timeout 20 docker info >/dev/null 2>&1 || skip "the Docker engine does not answer (docker info failed or took over 20 s)"
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    skip "neither 'docker compose' nor 'docker-compose' is installed"
fi

BASE_IMAGE=${RAFTGRES_BASE_IMAGE:-}
MAKE_BASE=0
if [[ -z $BASE_IMAGE ]]; then
    BASE_IMAGE=raftgres-base:bookworm
    if [[ $(id -u) -eq 0 ]]; then
        MAKE_BASE=1
    elif ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        skip "the base image $BASE_IMAGE is missing and making it needs root: run sudo docker/scripts/make-base-image.sh"
    fi
fi

# Nothing from the caller's environment or .env may change the cluster under test.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(RAFTGRES|PATRONI)_' || true)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftgres-compose-e2e.XXXXXX")
ENV_FILE=$WORK/e2e.env
random_secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
SUPERUSER_PASSWORD=$(random_secret)
cat >"$ENV_FILE" <<EOF
RAFTGRES_SUPERUSER_PASSWORD=$SUPERUSER_PASSWORD
RAFTGRES_REPLICATION_PASSWORD=$(random_secret)
RAFTGRES_RESTAPI_USERNAME=e2e
RAFTGRES_RESTAPI_PASSWORD=$(random_secret)
RAFTGRES_BASE_IMAGE=$BASE_IMAGE
RAFTGRES_IMAGE=raftgres:e2e
RAFTGRES_PUBLISH_ADDRESS=127.0.0.1
RAFTGRES_PRIMARY_PORT=
RAFTGRES_REPLICA_PORT=
RAFTGRES_STATS_PORT=
EOF

COMPOSE_CMD=("${COMPOSE[@]}" --env-file "$ENV_FILE" -p "$PROJECT" -f docker-compose.yml)
compose() { "${COMPOSE_CMD[@]}" "$@"; }

PASSED=0
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((PASSED == 0)); then
        log "collecting state for the failure report"
        compose ps 2>&1 || true
        for service in "${NODES[@]}" haproxy; do
            echo "----- last log lines of $service -----"
            compose logs --no-color --tail 60 "$service" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400 || true
        done
    fi
    # The whole log of every container, kept for reading after the run (target/ is ignored by git).
    mkdir -p target/compose-e2e
    if compose logs --no-color --timestamps >"$WORK/compose.log" 2>&1; then
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/compose.log" >target/compose-e2e/last-run.log
        local n_error n_warn
        n_error=$(grep -c ' ERROR ' target/compose-e2e/last-run.log || true)
        n_warn=$(grep -c ' WARN ' target/compose-e2e/last-run.log || true)
        record "raftgres log lines" "$n_error ERROR, $n_warn WARN (target/compose-e2e/last-run.log)"
        grep -E ' (ERROR|WARN) ' target/compose-e2e/last-run.log | cut -c1-300 | head -n 20 || true
    fi
    if [[ ${RAFTGRES_E2E_KEEP:-} == 1 ]]; then
        log "RAFTGRES_E2E_KEEP=1: leaving project $PROJECT running (env file $ENV_FILE)"
    else
        local down_start=$EPOCHREALTIME
        if timeout 120 "${COMPOSE_CMD[@]}" down -v --remove-orphans -t 30 >"$WORK/down.log" 2>&1; then
            record "compose down -v" "$(since "$down_start") s"
        else
            log "compose down -v failed:"
            cat "$WORK/down.log" || true
        fi
        rm -rf "$WORK"
    fi
    if ((${#SUMMARY[@]} > 0)); then
        echo "compose-e2e summary ($("${COMPOSE[@]}" version --short 2>/dev/null || echo compose), base $BASE_IMAGE):"
        printf '%s\n' "${SUMMARY[@]}"
    fi
    if ((PASSED == 1)); then
        echo "compose-e2e: PASSED in $(elapsed) s"
    else
        echo "compose-e2e: FAILED after $(elapsed) s (exit status $status)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# wait_until DESCRIPTION SECONDS COMMAND...: polls COMMAND every half second until it succeeds.
wait_until() {
    local what=$1 bound=$2
    shift 2
    local until=$((SECONDS + bound))
    while ! "$@"; do
        ((SECONDS < until)) || fail "$what: not within $bound s"
        ((SECONDS < DEADLINE)) || fail "$what: the overall bound of $TIMEOUT s ran out"
        sleep 0.5
    done
}

# run_step DESCRIPTION SECONDS COMMAND...: runs COMMAND with its output in a log, shown on failure;
# SECONDS is cut to what is left of the overall bound.
run_step() {
    local what=$1 bound=$2
    shift 2
    local remaining=$((DEADLINE - SECONDS))
    ((bound <= remaining)) || bound=$remaining
    ((bound > 0)) || fail "$what: the overall bound of $TIMEOUT s ran out"
    local step_log
    step_log=$WORK/step-$(echo "$what" | tr -c 'a-z0-9' '-').log
    if ! timeout "$bound" "$@" >"$step_log" 2>&1; then
        tail -n 40 "$step_log"
        fail "$what failed or took over $bound s (last 40 lines above)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Helpers that talk to the cluster. SQL and REST calls run inside the HAProxy container: it has psql
# and curl, resolves the node names, and its ports 5000 and 5001 are the ones under test.

declare -A CID
HAPROXY=

# service_container SERVICE: the container id, by compose's labels (faster than `compose ps -q`).
service_container() {
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" | head -n 1
}

container_ids() {
    local service
    for service in "${NODES[@]}"; do
        CID[$service]=$(service_container "$service")
        [[ -n ${CID[$service]} ]] || fail "no container for $service"
    done
    HAPROXY=$(service_container haproxy)
    [[ -n $HAPROXY ]] || fail "no container for haproxy"
}

# sql PORT|HOST:PORT SQL: one statement through HAProxy (port only) or straight to a node.
sql() {
    local target=$1 host=127.0.0.1 port=$1
    if [[ $target == *:* ]]; then
        host=${target%:*}
        port=${target##*:}
    fi
    docker exec -e PGPASSWORD="$SUPERUSER_PASSWORD" -e PGCONNECT_TIMEOUT=3 "$HAPROXY" \
        psql -h "$host" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -XAtq -c "$2" 2>/dev/null
}

# rest_code NODE PATH: the HTTP status of the node's REST API, seen from the HAProxy container.
rest_code() {
    docker exec "$HAPROXY" curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$1:8008/$2" 2>/dev/null || true
}

# local_rest_code NODE PATH: the same, seen from inside the node (works while it is disconnected).
local_rest_code() {
    docker exec "${CID[$1]}" curl -s -o /dev/null -m 2 -w '%{http_code}' "http://localhost:8008/$2" 2>/dev/null || true
}

primaries() {
    local node res=()
    for node in "${NODES[@]}"; do
        [[ $(rest_code "$node" primary) == 200 ]] && res+=("$node")
    done
    echo "${res[*]}"
}

# one_primary_two_replicas: true when exactly one node answers /primary and the others /replica.
one_primary_two_replicas() {
    local node n_primary=0 n_replica=0
    for node in "${NODES[@]}"; do
        case $(rest_code "$node" primary) in 200) n_primary=$((n_primary + 1)) ;; esac
        case $(rest_code "$node" replica) in 200) n_replica=$((n_replica + 1)) ;; esac
    done
    ((n_primary == 1 && n_replica == 2))
}

all_healthy() {
    local node
    for node in "${NODES[@]}"; do
        [[ $(docker inspect -f '{{.State.Health.Status}}' "${CID[$node]}" 2>/dev/null) == healthy ]] || return 1
    done
}

# haproxy_routes_as_rest: true when HAProxy's own health checks agree with the nodes' REST API:
# the one node answering /primary is the only server UP behind port 5000, and the nodes answering
# /replica are exactly the servers UP behind port 5001. REST can turn healthy a check interval
# before HAProxy does (inter 1s; servers leave MAINT only once Docker's DNS resolves them), and a
# client connecting in between is refused or routed to the wrong role.
haproxy_routes_as_rest() {
    local csv node rest_primary=() rest_replicas=() up_primary up_standbys
    csv=$(docker exec "$HAPROXY" curl -fsS -m 2 'http://localhost:7000/;csv' 2>/dev/null) || return 1
    for node in "${NODES[@]}"; do
        [[ $(rest_code "$node" primary) == 200 ]] && rest_primary+=("$node")
        [[ $(rest_code "$node" replica) == 200 ]] && rest_replicas+=("$node")
    done
    ((${#rest_primary[@]} == 1)) || return 1
    # Field 18 of HAProxy's CSV statistics is the status (UP, DOWN, MAINT, "UP 1/2", ...); the BACKEND row
    # sums up the servers and is not one.
    up_primary=$(awk -F, '$1 == "primary" && $2 != "BACKEND" && $18 == "UP" { print $2 }' <<<"$csv" | sort | xargs)
    up_standbys=$(awk -F, '$1 == "standbys" && $2 != "BACKEND" && $18 == "UP" { print $2 }' <<<"$csv" | sort | xargs)
    [[ $up_primary == "${rest_primary[*]}" && $up_standbys == "$(printf '%s\n' "${rest_replicas[@]}" | sort | xargs)" ]]
}

insert_row() { [[ $(sql 5000 "insert into e2e (phase) values ('$1') returning 'ok'") == ok ]]; }
rows_on() { sql "$1" "select count(*) from e2e where phase = '$2'"; }
has_row() { [[ $(rows_on "$1" "$2") == 1 ]]; }
is_replica_with_row() { [[ $(rest_code "$1" replica) == 200 ]] && has_row "$1:5432" "$2"; }

# ---------------------------------------------------------------------------------------------
log "using ${COMPOSE[*]}, base image $BASE_IMAGE, work directory $WORK"

step_start=$EPOCHREALTIME
if ((MAKE_BASE)); then
    run_step "make the base image" 1200 docker/scripts/make-base-image.sh --tag "$BASE_IMAGE"
    cat "$WORK"/step-make-the-base-image*.log
fi
record "base image $BASE_IMAGE" "$(since "$step_start") s"

step_start=$EPOCHREALTIME
cargo_program=${CARGO:-cargo}
if command -v "$cargo_program" >/dev/null; then
    run_step "cargo build --release -p raftgres" 1800 "$cargo_program" build --release -p raftgres
elif [[ -x target/release/raftgres ]]; then
    log "no cargo on PATH: using the existing target/release/raftgres as it is"
else
    fail "target/release/raftgres is missing and cargo is not on PATH"
fi
record "release binary" "$(since "$step_start") s"

# A previous run that was killed hard may have left its project behind.
compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true

step_start=$EPOCHREALTIME
run_step "compose up -d --build" 600 "${COMPOSE_CMD[@]}" up -d --build
record "compose up -d --build" "$(since "$step_start") s"
step_start=$EPOCHREALTIME
container_ids
wait_until "three healthy containers" 240 all_healthy
wait_until "one primary and two replicas" 120 one_primary_two_replicas
first_primary=$(primaries)
record "cluster healthy" "$(since "$step_start") s after up returned (primary $first_primary)"
wait_until "HAProxy routes as the REST API says" 60 haproxy_routes_as_rest

primary_port=$(compose port haproxy 5000)
replica_port=$(compose port haproxy 5001)
stats_port=$(compose port haproxy 7000)
log "HAProxy published: primary $primary_port, replicas $replica_port, stats http://$stats_port/"
if command -v curl >/dev/null; then
    # Read the whole page first: `curl | grep -q` fails under pipefail when grep exits before curl wrote it all.
    stats_csv=$(curl -fsS -m 5 "http://$stats_port/;csv") || fail "the stats page on $stats_port does not answer"
    grep -q '^primary,' <<<"$stats_csv" || fail "the stats page on $stats_port does not list the primary backend"
fi
# The CLI in the image reads the node's configuration (PATRONICTL_CONFIG_FILE) with the REST API credentials of
# the container's environment: read and write commands work out of the box.
docker exec "${CID[node1]}" raftgres list >/dev/null || fail "raftgres list inside node1"
reload_out=$(docker exec "${CID[node1]}" raftgres reload --force 2>&1) || fail "raftgres reload inside node1: $reload_out"
[[ $reload_out == *"Reload request received for member"* || $reload_out == *"No changes to apply"* ]] \
    || fail "raftgres reload inside node1 printed: $reload_out"
record "raftgres CLI inside a container" "list and reload (authenticated) work"
if command -v psql >/dev/null; then
    host_role=$(PGPASSWORD=$SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=5 psql -h "${primary_port%:*}" -p "${primary_port##*:}" \
        -U postgres -d postgres -XAtqc 'select pg_is_in_recovery()')
    [[ $host_role == f ]] || fail "the published primary port $primary_port reached a server in recovery"
    record "host port $primary_port (psql)" "primary reached"
fi

# ---------------------------------------------------------------------------------------------
step_start=$EPOCHREALTIME
sql 5000 "create table e2e (id bigserial primary key, phase text not null, at timestamptz default now())" >/dev/null \
    || fail "create table through port 5000"
insert_row initial || fail "insert through port 5000"
[[ $(sql 5000 'select pg_is_in_recovery()') == f ]] || fail "port 5000 does not reach the primary"
[[ $(sql 5001 'select pg_is_in_recovery()') == t ]] || fail "port 5001 does not reach a replica"
wait_until "the row is readable through port 5001" 30 has_row 5001 initial
for node in "${NODES[@]}"; do
    wait_until "the row is on $node" 30 has_row "$node:5432" initial
done
record "write 5000, read 5001" "$(since "$step_start") s (row on every node)"

# ---------------------------------------------------------------------------------------------
victim=$first_primary
log "docker kill $victim (the primary)"
step_start=$EPOCHREALTIME
docker kill "${CID[$victim]}" >/dev/null
wait_until "a write through port 5000 after killing $victim" 60 insert_row after-kill
kill_gap=$(since "$step_start")
second_primary=$(primaries)
[[ -n $second_primary && $second_primary != "$victim" && $second_primary != *" "* ]] \
    || fail "after killing $victim the primaries are '$second_primary'"
has_row 5000 initial || fail "the row written before the kill is missing on $second_primary"
record "docker kill $victim" "writes back after $kill_gap s (new primary $second_primary)"
# The new primary told HAProxy's runtime API at once (the `haproxy` section of docker/raftgres.yml).
promoted_log=$(docker logs "${CID[$second_primary]}" 2>&1) || fail "cannot read the logs of $second_primary"
grep -q 'pushed the role change to HAProxy' <<<"$promoted_log" \
    || fail "$second_primary did not push its promotion to HAProxy's runtime API (haproxy:9999)"

step_start=$EPOCHREALTIME
docker start "${CID[$victim]}" >/dev/null
wait_until "$victim rejoins as a replica" 120 is_replica_with_row "$victim" after-kill
record "docker start $victim" "replica after $(since "$step_start") s"
wait_until "one primary and two replicas" 60 one_primary_two_replicas

# ---------------------------------------------------------------------------------------------
victim=$second_primary
network=$(docker inspect -f '{{range $name, $net := .NetworkSettings.Networks}}{{$name}}{{"\n"}}{{end}}' "${CID[$victim]}" | head -n 1)
[[ -n $network ]] || fail "cannot find the network of $victim"
log "docker network disconnect $network $victim (the primary)"
step_start=$EPOCHREALTIME
docker network disconnect "$network" "${CID[$victim]}"
demoted_after=
written_after=
until [[ -n $demoted_after && -n $written_after ]]; do
    ((SECONDS < DEADLINE)) || fail "the overall bound of $TIMEOUT s ran out during the partition"
    if [[ -z $demoted_after && $(local_rest_code "$victim" primary) != 200 ]]; then
        demoted_after=$(since "$step_start")
        log "$victim no longer answers 200 on /primary"
    fi
    if [[ -z $written_after ]] && insert_row after-partition; then
        written_after=$(since "$step_start")
        log "a write through port 5000 succeeded"
    fi
    awk -v s="$(since "$step_start")" 'BEGIN { exit !(s > 60) }' \
        && fail "partition of $victim: demoted after '${demoted_after:-never}', writes after '${written_after:-never}' (bound 60 s)"
    sleep 0.5
done
third_primary=$(primaries)
[[ -n $third_primary && $third_primary != "$victim" && $third_primary != *" "* ]] \
    || fail "after disconnecting $victim the primaries are '$third_primary'"
isolated_write=$(docker exec -e PGPASSWORD="$SUPERUSER_PASSWORD" -e PGCONNECT_TIMEOUT=3 "${CID[$victim]}" \
    psql -h 127.0.0.1 -U postgres -d postgres -XAtqc "insert into e2e (phase) values ('isolated') returning 'ok'" 2>&1 || true)
[[ $isolated_write != ok ]] || fail "the disconnected $victim still accepted a write"
record "network disconnect $victim" "demoted after $demoted_after s, writes back after $written_after s (new primary $third_primary)"

step_start=$EPOCHREALTIME
docker network connect --alias "$victim" "$network" "${CID[$victim]}"
wait_until "$victim rejoins as a replica after reconnecting" 120 is_replica_with_row "$victim" after-partition
record "network connect $victim" "replica after $(since "$step_start") s"

# ---------------------------------------------------------------------------------------------
step_start=$EPOCHREALTIME
wait_until "one primary and two replicas at the end" 60 one_primary_two_replicas
wait_until "HAProxy routes as the REST API says at the end" 60 haproxy_routes_as_rest
insert_row final || fail "the final write through port 5000"
wait_until "the final row through port 5001" 30 has_row 5001 final
n_rows=$(sql 5000 'select count(*) from e2e')
[[ $n_rows == 4 ]] || fail "expected 4 rows (initial, after-kill, after-partition, final), found $n_rows"
record "final write 5000, read 5001" "$(since "$step_start") s ($n_rows rows, primary $(primaries))"

PASSED=1
