#!/usr/bin/env bash
# Starts the local services the tests need when a probe finds them down (commands: ../shared/DESIGN.md §8).
set -u
probe() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { for _ in $(seq 1 50); do probe "$1" && return 0; sleep 0.2; done; return 1; }

if [ -n "${VPP_TEST_POSTGRES_URL:-}" ]; then
  echo "postgres: using VPP_TEST_POSTGRES_URL"
elif probe 5432; then
  echo "postgres: up on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: down, starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_for 5432 && echo "postgres: started" || echo "postgres: could not start; PostgreSQL tests will be skipped" >&2
else
  echo "postgres: not installed; PostgreSQL tests will be skipped" >&2
fi

if probe 6379; then
  echo "redis: up on 127.0.0.1:6379"
elif command -v redis-server >/dev/null 2>&1; then
  echo "redis: down, starting it"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
  wait_for 6379 && echo "redis: started" || echo "redis: could not start" >&2
fi
# Headless Chromium for the dashboard test (Debian's package; Playwright drives it, no download).
if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "chromium: not installed, installing Debian's package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || echo "chromium: could not install; the dashboard test will be skipped" >&2
else
  echo "chromium: not installed and cannot install; the dashboard test will be skipped" >&2
fi
exit 0
