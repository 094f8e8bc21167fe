#!/usr/bin/env bash
# Installs what the tests need and a fresh machine lacks (Debian's packages, as root), and resolves
# Apache Kafka's jars from Maven Central into a cache outside the repository. Starts nothing: the
# test run finds or starts its own servers (tests/services.py), so nothing is kept between runs.
set -u
cd "$(dirname "$0")/.."
began=$(date +%s)
missing=()

if [ -n "${DATABASE_URL:-}" ]; then
  echo "postgres: DATABASE_URL given"
elif ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  echo "postgres: server binaries present"
else
  missing+=(postgresql)
fi
if [ -n "${REDIS_URL:-}" ]; then
  echo "redis: REDIS_URL given"
elif command -v redis-server >/dev/null 2>&1; then
  echo "redis: redis-server present"
else
  missing+=(redis-server)
fi
# Apache Kafka runs on the machine's JDK, its jars resolved by Maven (Debian's maven brings a JRE).
if [ -z "${KAFKA_BROKERS:-}" ] && ! { command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; }; then
  missing+=(maven default-jre-headless)
fi
# Headless Chromium for the dashboard test (Debian's package; Playwright drives it, no download).
if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
else
  missing+=(chromium)
fi

# The container test: a Docker engine (Debian's dockerd, started by the test where none runs),
# debootstrap for a stand-in base image where no registry answers, Compose v1 to read the file.
if docker info >/dev/null 2>&1; then
  echo "docker: an engine answers"
elif ! command -v dockerd >/dev/null 2>&1; then
  missing+=(docker.io)
fi
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)

if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing Debian's ${missing[*]} ..."
    export DEBIAN_FRONTEND=noninteractive
    # Debian's postinst would start a system cluster/server; the tests start their own.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install() { apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"; }
    { apt_install >/tmp/vpp-apt.log 2>&1 \
      || { apt-get update -q -o DPkg::Lock::Timeout=300 >>/tmp/vpp-apt.log 2>&1 && apt_install >>/tmp/vpp-apt.log 2>&1; }; } \
      && echo "installed: ${missing[*]}" \
      || echo "could not install ${missing[*]} (see /tmp/vpp-apt.log); their tests skip, or fail under CI" >&2
  else
    echo "missing ${missing[*]} and cannot install them (needs root and apt-get); their tests skip, or fail under CI" >&2
  fi
fi

# Apache Kafka: the machine's JDK and Maven; without them the tests fall back to Tansu (loudly).
if [ -n "${KAFKA_BROKERS:-}" ]; then
  echo "kafka: KAFKA_BROKERS given"
elif command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then
  .venv/bin/python -m devservices || echo "kafka: jars not resolved; see above" >&2
else
  echo "kafka: *** no java/mvn: tests fall back to Tansu, NOT Apache Kafka ***" >&2
fi
echo "set-up took $(( $(date +%s) - began )) s"
exit 0
