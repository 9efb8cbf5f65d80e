#!/usr/bin/env bash
# `make run-cluster`: the scaled-out topology on one machine, in the foreground. Migrates, then runs
# two web servers (PORT and PORT+1) and two Celery workers against DATABASE_URL, REDIS_URL and
# CELERY_BROKER_URL (default: the local PostgreSQL database `test`, Redis and RabbitMQ). Ctrl-C or
# SIGTERM stops them all. Keys: SECRET_KEY and FIELD_ENCRYPTION_KEYS from the environment, else
# generated once into var/cluster.env (mode 0600) so that every process shares them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export CELERY_BROKER_URL=${CELERY_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//}
export TASK_EXECUTION=celery
if [ -z "${SECRET_KEY:-}" ] || [ -z "${FIELD_ENCRYPTION_KEYS:-}" ]; then
  mkdir -p var
  if [ ! -f var/cluster.env ]; then
    (umask 077; $PY -c "import secrets; from cryptography.fernet import Fernet
print('SECRET_KEY=' + secrets.token_urlsafe(50)); print('FIELD_ENCRYPTION_KEYS=' + Fernet.generate_key().decode())" > var/cluster.env)
  fi
  set -a; . var/cluster.env; set +a
fi
$PY manage.py migrate --noinput -v 0
$PY manage.py bootstrap --if-empty --url "http://$HOST:$PORT/"
pids=()
stop() { trap - INT TERM; kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap 'stop; exit 0' INT TERM
for p in "$PORT" "$((PORT + 1))"; do
  $PY -m console.serve -b "$HOST" -p "$p" console.asgi:application & pids+=($!)
done
for n in 1 2; do
  $PY -m celery -A console worker --pool threads --concurrency "${CELERY_CONCURRENCY:-100}" \
    --hostname "w$n@%h" --without-gossip --without-mingle --loglevel INFO & pids+=($!)
done
echo "Console: http://$HOST:$PORT/ and http://$HOST:$((PORT + 1))/ (Ctrl-C stops all four processes)"
wait -n "${pids[@]}" || true
stop
