# syntax=docker/dockerfile:1

# One image for every process of the service; the command picks the role:
#   app serve     the API (the default CMD)
#   app worker    the ARQ background worker
#   app migrate   create the database if missing, then `alembic upgrade head`
# compose.yaml wires it to PostgreSQL and Redis. Build with `docker build -t app .`.

ARG PYTHON_VERSION=3.13
ARG UV_VERSION=0.13.9

# The uv binaries, from Astral's distroless image (pinned: uv.lock and uv_build track it).
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv


# ---- builder: resolve the locked dependencies and install the project into /app/.venv ----
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
COPY --from=uv /uv /uvx /bin/

# Compile bytecode for faster starts; copy out of the cache mount instead of hard-linking;
# use the image's interpreter (never download one), since the runtime stage has the same one
# at the same path. The venv lives at /app/.venv in both stages so its paths stay valid.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies only (no project, no dev group): this layer is rebuilt only when
# pyproject.toml or uv.lock change, not on every source edit.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project --no-editable

# Then the project itself, built as a wheel and installed non-editable, so the runtime stage
# needs the venv and not the source tree. README.md is read by the build (project.readme).
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable


# ---- runtime: the venv, the migrations, no uv, no compilers, not root ----
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init \
        --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/app/storage \
    && chown -R app:app /var/lib/app

# ENVIRONMENT defaults to production, so a container started without configuration refuses
# the placeholder JWT_SECRET instead of running with it (compose.yaml sets development).
# `app serve` reads HOST and PORT; `app migrate` finds alembic.ini through ALEMBIC_CONFIG;
# files the service writes (exports) go to STORAGE_DIR, the one writable directory.
ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    ALEMBIC_CONFIG=/app/alembic.ini \
    STORAGE_DIR=/var/lib/app/storage

WORKDIR /app

# Owned by root and only readable by the app user: the process cannot rewrite its own code.
COPY --from=builder /app/.venv /app/.venv
COPY alembic.ini ./
COPY migrations ./migrations

EXPOSE 8000

# Numeric, so Kubernetes' runAsNonRoot can verify it (uid 10001 is the `app` user above).
USER 10001:10001

# Liveness only (/health/live touches neither PostgreSQL nor Redis). The slim image has no
# curl, so Python's urllib does the request; any error or non-2xx status exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["app", "serve"]
