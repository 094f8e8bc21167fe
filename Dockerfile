# vpp-aggregator: the HTTP API (`vpp-aggregator serve`) on port 3003.
#
# Build with `make image`. It first makes build/wheelhouse outside the build: the hash-checked
# wheels of requirements.lock, the project's own wheel, and Debian's OpenMP runtime for LightGBM.
# The build installs only those: it needs no network, and no source file reaches a layer.
# Run: docker run -p 3003:3003 -v vpp-data:/data -e VPP_JWT_SECRET=... vpp-aggregator
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS install
COPY build/wheelhouse /wheelhouse
# One virtualenv, filled from the wheelhouse alone; every file is checked against its hash.
# Then what never runs in production goes: pip itself, test suites, type stubs.
RUN python -m venv /opt/vpp \
    && /opt/vpp/bin/python -m pip install --no-index --find-links /wheelhouse \
       --require-hashes --no-deps --no-cache-dir --disable-pip-version-check \
       -r /wheelhouse/image-requirements.txt \
    && /opt/vpp/bin/python -m pip uninstall -y -q pip setuptools \
    && sh /wheelhouse/trim-venv.sh /opt/vpp

FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/vpp/bin:$PATH \
    PORT=3003 \
    VPP_HOST=0.0.0.0 \
    DATABASE_URL=sqlite:////data/vpp.db \
    VPP_MODEL_DIR=/data/models \
    VPP_MIGRATE_ON_START=1

# LightGBM (the forecaster) needs the OpenMP runtime, which the slim image does not carry:
# Debian's package, fetched with the wheels (apt checked it against the signed archive).
COPY build/wheelhouse/debs /tmp/debs
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs

COPY --from=install /opt/vpp /opt/vpp

RUN groupadd --system --gid 10001 vpp \
    && useradd --system --uid 10001 --gid vpp --home-dir /home/vpp --create-home \
       --shell /usr/sbin/nologin vpp \
    && mkdir -p /data/models \
    && chown -R vpp:vpp /data
VOLUME ["/data"]
WORKDIR /home/vpp
USER vpp

EXPOSE 3003

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3003') + '/health', timeout=4)"]

# Bring the schema up to date (under a database lock: replicas may start together), then replace
# the shell with the command so that signals reach it. Set VPP_MIGRATE_ON_START=0 when a separate
# job runs `vpp-aggregator migrate`.
ENTRYPOINT ["/bin/sh", "-c", "if [ \"${VPP_MIGRATE_ON_START:-1}\" = 1 ]; then vpp-aggregator migrate || exit 1; fi; exec \"$@\"", "vpp-entrypoint"]
CMD ["vpp-aggregator", "serve"]
