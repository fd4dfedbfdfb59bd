# The crypto data hub gateway: one process, one event loop, GraphQL on port 7860
# (or $PORT, as container platforms set it). README "Deployment" has the compose file, the
# reverse proxy for TLS and WebSockets, and how to update the lock file.
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_DB=/data/gateway.db \
    GATEWAY_PROVIDERS=/app/providers.toml \
    GATEWAY_LOG_FORMAT=json

WORKDIR /app

# 1. Dependencies, pinned by requirements.lock (deploy/lock.sh). This layer is rebuilt only when
# the lock changes, not on every code change. torch first, as its CPU-only build: PyPI's torch
# for Linux is the CUDA build (gigabytes of nvidia-* wheels) and this image has no GPU; the lock
# leaves torch and those packages out and pins everything else, torch's own dependencies too.
COPY requirements.lock ./
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && pip install --no-deps --requirement requirements.lock

# 2. The code: installed without resolving anything (everything it needs is above), then
# checked for a dependency the lock does not satisfy.
COPY pyproject.toml README.md providers.toml schema.graphql ./
COPY gateway ./gateway
RUN pip install --no-deps . \
    && pip check \
    && useradd --create-home --uid 10001 gateway \
    && mkdir -p /data \
    && chown gateway:gateway /data

USER 10001
VOLUME ["/data"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('GATEWAY_PORT') or os.environ.get('PORT') or '7860'; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

# SIGTERM (docker stop) is a graceful shutdown: writes are flushed, WebSockets closed with 1001.
STOPSIGNAL SIGTERM
CMD ["gateway", "serve"]
