#!/usr/bin/env bash
# Makes the raftgres base image locally, without any container registry:
# debootstrap a Debian bookworm root filesystem (variant minbase) with PostgreSQL 15, HAProxy and
# the tools the containers use, then `docker import` it.
#
# Usage: docker/scripts/make-base-image.sh [--tag IMAGE] [--mirror URL] [--force] [--tag-debian]
#   --tag IMAGE    the tag to create (default raftgres-base:bookworm, or $RAFTGRES_BASE_IMAGE)
#   --mirror URL   Debian mirror (default $DEBIAN_MIRROR or http://deb.debian.org/debian)
#   --force        rebuild even if the tag exists with the current recipe
#   --tag-debian   also tag the result debian:bookworm-slim, only if that tag is absent, so an
#                  unmodified `docker build` of docker/Dockerfile works offline too
#
# The result is cached by tag: when IMAGE exists and carries this script's recipe label, the
# script prints so and exits at once. Build with it through the compose file:
#   RAFTGRES_BASE_IMAGE=raftgres-base:bookworm docker compose up -d --build
# Needs root (debootstrap and chroot), a Docker engine, and access to a Debian mirror.
set -euo pipefail

# Bump when the package list or the steps below change: a cached image with another recipe is rebuilt.
RECIPE="raftgres-base-1"
SUITE=bookworm
PACKAGES=(postgresql-15 postgresql-client-15 haproxy ca-certificates procps curl iproute2 tini)

tag=${RAFTGRES_BASE_IMAGE:-raftgres-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
force=0
tag_debian=0
while (($# > 0)); do
    case $1 in
        --tag) tag=$2; shift 2 ;;
        --mirror) mirror=$2; shift 2 ;;
        --force) force=1; shift ;;
        --tag-debian) tag_debian=1; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "make-base-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "make-base-image: $*"; }

tag_debian_if_absent() {
    ((tag_debian)) || return 0
    if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
        log "debian:bookworm-slim exists already; not retagging it"
    else
        docker tag "$tag" debian:bookworm-slim
        log "tagged $tag as debian:bookworm-slim"
    fi
}

if ! docker info >/dev/null 2>&1; then
    echo "make-base-image: the Docker engine does not answer (docker info failed)" >&2
    exit 1
fi

existing_recipe=$(docker image inspect --format '{{ index .Config.Labels "org.raftgres.base-recipe" }}' "$tag" 2>/dev/null || true)
if ((force == 0)) && [[ $existing_recipe == "$RECIPE" ]]; then
    log "$tag exists (recipe $RECIPE); nothing to do (--force rebuilds)"
    tag_debian_if_absent
    exit 0
fi
if [[ -n $existing_recipe ]]; then
    log "$tag has recipe '$existing_recipe', want '$RECIPE': rebuilding"
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "make-base-image: must run as root (debootstrap and chroot); try: sudo $0" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    if [[ -f /etc/debian_version ]]; then
        log "installing debootstrap"
        apt-get install -y debootstrap || { apt-get update && apt-get install -y debootstrap; }
    else
        echo "make-base-image: debootstrap is missing; install it with your package manager" >&2
        exit 1
    fi
fi

started=$SECONDS
workdir=$(mktemp -d "${TMPDIR:-/var/tmp}/raftgres-base.XXXXXX")
rootfs=$workdir/rootfs

cleanup() {
    for mount_point in "$rootfs/dev/pts" "$rootfs/proc" "$rootfs/sys"; do
        if mountpoint -q "$mount_point" 2>/dev/null; then
            umount -l "$mount_point" || true
        fi
    done
    rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT

log "debootstrap $SUITE (minbase) from $mirror into $rootfs"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$workdir/debootstrap.log" >&2
    echo "make-base-image: debootstrap failed; full log above (last 30 lines)" >&2
    exit 1
}

# What Debian's -slim images do: no documentation, manual pages or translations.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIM
# No service may start inside the chroot (it would run on this host).
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
# raftgres creates its own data directory: no default "15 main" cluster.
mkdir -p "$rootfs/etc/postgresql-common/createcluster.d"
echo "create_main_cluster = false" >"$rootfs/etc/postgresql-common/createcluster.d/raftgres.conf"
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security_mirror $SUITE-security main
SOURCES
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"

mount -t proc proc "$rootfs/proc"
mount -t sysfs sysfs "$rootfs/sys"
mkdir -p "$rootfs/dev/pts"
mount -t devpts devpts "$rootfs/dev/pts"

in_root() { chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

log "installing ${PACKAGES[*]}"
{
    in_root apt-get update
    in_root apt-get -y upgrade
    in_root apt-get install -y --no-install-recommends "${PACKAGES[@]}"
} >"$workdir/apt.log" 2>&1 || {
    tail -n 30 "$workdir/apt.log" >&2
    echo "make-base-image: apt-get in the chroot failed (last 30 lines above)" >&2
    exit 1
}
if [[ -d $rootfs/etc/postgresql/15/main ]]; then
    in_root pg_dropcluster 15 main
fi
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/apt/* "$rootfs"/var/log/dpkg.log "$rootfs/usr/sbin/policy-rc.d"
: >"$rootfs/etc/resolv.conf"

umount "$rootfs/dev/pts" "$rootfs/sys" "$rootfs/proc"

log "importing as $tag"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change "LABEL org.raftgres.base-recipe=$RECIPE" \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with PostgreSQL 15 and HAProxy, made by docker/scripts/make-base-image.sh\"" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["bash"]' \
    - "$tag" >/dev/null
tag_debian_if_absent
size=$(docker image inspect --format '{{ .Size }}' "$tag")
log "done: $tag ($((size / 1024 / 1024)) MiB) in $((SECONDS - started)) s"
