# vpp-aggregator: the HTTP API (`vpp-aggregator serve`) on port 3003.
# Build: docker build -t vpp-aggregator .   Run: docker run -p 3003:3003 -v vpp-data:/data vpp-aggregator
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3003 \
    VPP_HOST=0.0.0.0 \
    DATABASE_URL=sqlite:////data/vpp.db \
    VPP_MIGRATE_ON_START=1

# LightGBM (forecaster) needs the OpenMP runtime, which the slim image does not carry.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, pinned and hash-checked, so this layer is reused until the lock changes.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock

# The project itself, without re-resolving anything.
COPY pyproject.toml README.md /tmp/build/
COPY src /tmp/build/src
RUN pip install --no-deps /tmp/build && rm -rf /tmp/build

RUN groupadd --system --gid 10001 vpp \
    && useradd --system --uid 10001 --gid vpp --home-dir /home/vpp --create-home \
       --shell /usr/sbin/nologin vpp \
    && mkdir -p /data \
    && chown vpp:vpp /data
VOLUME ["/data"]
WORKDIR /home/vpp
USER vpp

EXPOSE 3003

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3003') + '/health', timeout=4)"]

# Bring the schema up to date, then replace the shell with the command (signals reach it).
# Set VPP_MIGRATE_ON_START=0 when a separate job runs `vpp-aggregator migrate`.
ENTRYPOINT ["/bin/sh", "-c", "if [ \"${VPP_MIGRATE_ON_START:-1}\" = 1 ]; then vpp-aggregator migrate || exit 1; fi; exec \"$@\"", "vpp-entrypoint"]
CMD ["vpp-aggregator", "serve"]
