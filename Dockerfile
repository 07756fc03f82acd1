# jitsi-oidc-gateway: a slim runtime image, non-root, pinned dependencies.
# Build:  docker build -t jitsi-oidc-gateway .
# Run:    docker run -v /etc/jitsi-oidc-gateway/settings.yaml:/app/settings.yaml:ro \
#           -p 8000:8000 jitsi-oidc-gateway
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 JOG_LISTEN__HOST=0.0.0.0
RUN groupadd --system gateway && useradd --system --gid gateway --home-dir /app gateway
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl && rm -rf /wheels
USER gateway
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2); sys.exit(0)"]
ENTRYPOINT ["jitsi-oidc-gateway"]
CMD ["serve", "-c", "/app/settings.yaml"]
