#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on loopback; starts them if they are installed but
# stopped. Exits non-zero when either cannot be reached (CI must not silently skip them).
set -uo pipefail
PG_HOST=${SIYU_PG_HOST:-127.0.0.1}
PG_PORT=${SIYU_PG_PORT:-5432}
REDIS_PORT=${SIYU_REDIS_PORT:-6379}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "PostgreSQL not answering on $PG_HOST:$PG_PORT; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$v" main start || true; done
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "Redis not answering on 127.0.0.1:$REDIS_PORT; starting it"
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
ok=0
pg_up && echo "PostgreSQL: up" || { echo "PostgreSQL: cannot be started" >&2; ok=1; }
redis_up && echo "Redis: up" || { echo "Redis: cannot be started" >&2; ok=1; }
exit $ok
