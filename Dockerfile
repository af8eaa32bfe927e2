# responses-gateway: a slim image that runs as a non-root user.
#   docker build -t responses-gateway .
#   docker run -e GATEWAY_ADMIN_KEY=... -e DATABASE_URL=postgresql://... -p 8000:8000 responses-gateway
# Migrations run separately (`responses-gateway migrate`, the compose file's `migrate` service).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    DATABASE_URL=sqlite+aiosqlite:////data/responses-gateway.db

WORKDIR /app
# Dependencies first (a layer that survives code edits), then the code. Installed in place
# (editable) so the gateway finds its Alembic migrations next to it.
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -e . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir /data && chown gateway /data

USER 10001
EXPOSE 8000
VOLUME ["/data"]

# No curl in a slim image: the healthcheck is Python's own urllib.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8000'), timeout=2)"]

CMD ["responses-gateway", "serve"]
