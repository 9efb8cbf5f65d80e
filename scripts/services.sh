#!/usr/bin/env bash
# Start the local services the tests and `make run-cluster` use, where they are not answering:
# PostgreSQL 127.0.0.1:5432, Redis 6379, RabbitMQ 5672 (the commands of the machine's own start-up).
set -uo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() {
  for _ in $(seq 1 120); do up "$1" && return 0; sleep 0.5; done
  echo "$2 did not come up on 127.0.0.1:$1" >&2; return 1
}
up 5432 || { pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start; wait_up 5432 PostgreSQL; }
up 6379 || { redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log; wait_up 6379 Redis; }
up 5672 || { rabbitmq-server -detached; wait_up 5672 RabbitMQ; }
