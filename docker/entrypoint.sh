#!/bin/sh
# Entrypoint of the raftgres image (run under tini, see docker/Dockerfile).
#
# For `raftgres run` it fills in what differs between nodes and is not set already, then execs
# raftgres, which reads /etc/raftgres/raftgres.yml with RAFTGRES_* environment overrides:
#   RAFTGRES_NAME                        the container's hostname
#   RAFTGRES_RESTAPI_CONNECT_ADDRESS     <hostname>:8008
#   RAFTGRES_POSTGRESQL_CONNECT_ADDRESS  <hostname>:5432
#   RAFTGRES_CTL_USERNAME/_PASSWORD      the REST API credentials
#   RAFTGRES_RAFT_TLS_CERTFILE/_KEYFILE  /etc/raftgres/certs/<name>.crt and .key, written by the
#                                        compose `certs` service (`raftgres certs init`)
# The hostname must resolve to this container on the peers' network, as a compose service name
# does. RAFTGRES_RAFT_NODE_ID and the passwords have no default: raftgres names what is missing.
# Anything else (haproxy, bash, psql) is executed as given.
set -eu

if [ "${1:-}" = raftgres ] && [ "${2:-}" = run ]; then
    host=$(hostname)
    : "${RAFTGRES_NAME:=$host}"
    : "${RAFTGRES_RESTAPI_CONNECT_ADDRESS:=$host:8008}"
    : "${RAFTGRES_POSTGRESQL_CONNECT_ADDRESS:=$host:5432}"
    : "${RAFTGRES_CTL_USERNAME:=${RAFTGRES_RESTAPI_USERNAME:-}}"
    : "${RAFTGRES_CTL_PASSWORD:=${RAFTGRES_RESTAPI_PASSWORD:-}}"
    : "${RAFTGRES_RAFT_TLS_CERTFILE:=/etc/raftgres/certs/$RAFTGRES_NAME.crt}"
    : "${RAFTGRES_RAFT_TLS_KEYFILE:=/etc/raftgres/certs/$RAFTGRES_NAME.key}"
    export RAFTGRES_NAME RAFTGRES_RESTAPI_CONNECT_ADDRESS RAFTGRES_POSTGRESQL_CONNECT_ADDRESS \
        RAFTGRES_CTL_USERNAME RAFTGRES_CTL_PASSWORD RAFTGRES_RAFT_TLS_CERTFILE RAFTGRES_RAFT_TLS_KEYFILE
    # raftgres creates the PostgreSQL data directory itself (0700, owned by postgres); the volume
    # root must stay enterable by postgres, and the raft directory is root's alone.
    mkdir -p /var/lib/raftgres/raft
    chmod 0755 /var/lib/raftgres
    chmod 0700 /var/lib/raftgres/raft
    if [ -z "${RAFTGRES_SUPERUSER_PASSWORD:-}" ] || [ -z "${RAFTGRES_REPLICATION_PASSWORD:-}" ]; then
        echo "raftgres-entrypoint: warning: RAFTGRES_SUPERUSER_PASSWORD or RAFTGRES_REPLICATION_PASSWORD is empty;" \
            "pg_hba.conf asks for passwords, so replicas cannot connect unless the config file sets them" >&2
    fi
    echo "raftgres-entrypoint: node $RAFTGRES_NAME (raft id ${RAFTGRES_RAFT_NODE_ID:-unset}), REST API $RAFTGRES_RESTAPI_CONNECT_ADDRESS"
fi

exec "$@"
