# syntax=docker/dockerfile:1
# jitsi-oidc-gateway: a slim runtime image, non-root, pinned dependencies, no build tools.
#
# Build:  docker build -t jitsi-oidc-gateway .
# Run:    docker run --read-only -v /etc/jitsi-oidc-gateway/settings.yaml:/app/settings.yaml:ro \
#           -v jog-var:/app/var -p 127.0.0.1:8000:8000 jitsi-oidc-gateway
# Secrets: JOG_COOKIES__SECRET_FILE=/run/secrets/cookie_secret (and the like), see docs/deploy.md.

# ---- build: wheels for exactly the pinned requirements and the project itself -------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip wheel --wheel-dir /wheels -r requirements.txt \
 && pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="jitsi-oidc-gateway" \
      org.opencontainers.image.description="OpenID Connect sign-in in front of Jitsi Meet" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    JOG_LISTEN__HOST=0.0.0.0 \
    JOG_LISTEN__PORT=8000
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /app --shell /usr/sbin/nologin gateway
WORKDIR /app
COPY --from=build /wheels /wheels
# Only the pinned wheels, no index; then drop the installer so the image has no way to
# fetch or build code at run time.
RUN pip install --no-index --no-deps /wheels/*.whl \
 && pip check \
 && rm -rf /wheels \
 && pip uninstall -y pip setuptools wheel \
 && mkdir -p /app/var \
 && chown gateway:gateway /app/var
# The audit spool (./var/audit-spool) survives restarts on this volume.
VOLUME ["/app/var"]
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('JOG_LISTEN__PORT', '8000'), timeout=2)"]
ENTRYPOINT ["jitsi-oidc-gateway"]
CMD ["serve", "-c", "/app/settings.yaml"]
