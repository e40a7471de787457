#!/usr/bin/env bash
# Make sure the local services the tests and the demo use are installed and up:
# PostgreSQL on 127.0.0.1:5432 (trust auth on loopback) and Redis on 127.0.0.1:6379.
# A bare machine has neither: they come from Debian's packages. Idempotent.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
apt_updated=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { echo "services: $* missing and no apt-get to install it" >&2; return 1; }
  # install, don't let the package's own init scripts start anything: we start them below
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; }
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- PostgreSQL --------------------------------------------------------------
if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
  echo "services: installing PostgreSQL from Debian's packages"
  apt_install postgresql postgresql-contrib
  if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
    v=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    $SUDO pg_createcluster "$v" main >/dev/null
  fi
fi
PGV=$(ls /etc/postgresql | sort -n | tail -n 1)
PGETC=/etc/postgresql/$PGV/main
changed=""
# trust on loopback only: the tests and the demo connect as postgres@127.0.0.1 without a password
if ! grep -q "regionguard: loopback trust" "$PGETC/pg_hba.conf"; then
  { echo "# regionguard: loopback trust (tests and demo; this machine only)"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    cat "$PGETC/pg_hba.conf"; } > /tmp/rg-pg_hba.conf
  $SUDO cp /tmp/rg-pg_hba.conf "$PGETC/pg_hba.conf"; rm -f /tmp/rg-pg_hba.conf
  changed=1
fi
# each test makes databases per region and each service a pool per region: 100 connections is too few
if [ ! -f "$PGETC/conf.d/regionguard.conf" ]; then
  printf "listen_addresses = 'localhost'\nmax_connections = 400\n" | $SUDO tee "$PGETC/conf.d/regionguard.conf" >/dev/null
  changed=1
fi

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if [ -n "$changed" ] && pg_up; then
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PGV" main restart
fi
if ! pg_up; then
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PGV" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1" >/dev/null \
  || { echo "services: PostgreSQL on 127.0.0.1:5432 refuses postgres without a password (see $PGETC/pg_hba.conf)" >&2; exit 1; }

# --- Redis -------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
  echo "services: installing Redis from Debian's packages"
  apt_install redis-server
fi
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  mkdir -p /tmp/rg-redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp/rg-redis --logfile /tmp/rg-redis/redis.log
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
fi
redis_up || { echo "services: Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
