# syntax=docker/dockerfile:1
# The bridge as a container image: build wheels in one stage, run from a slim one.
#
#   docker build -t twilio-realtime-bridge .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY=... -e PUBLIC_URL=https://... \
#       -e TWILIO_AUTH_TOKEN=... twilio-realtime-bridge
#
# PID 1 is `python -m bridge serve`, whose uvicorn server handles SIGTERM itself
# (drain: /twiml and /healthz answer 503 while live calls finish for --grace seconds).
# It starts no child processes, so no init is needed to reap them; `docker run --init`
# or compose's `init: true` is harmless if you prefer one.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Metadata first, so the dependency layer is reused while only the code changes.
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile ".[postgres]"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    DATABASE_URL=sqlite:////var/lib/bridge/bridge.db
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --home-dir /var/lib/bridge \
       --shell /usr/sbin/nologin bridge \
    && install -d -o bridge -g bridge -m 0750 /var/lib/bridge
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/bridge
USER 10001:10001
# 8080: Twilio's webhooks and Media Streams; 9100: /metrics when BRIDGE_METRICS_PORT=9100.
EXPOSE 8080 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "bridge"]
CMD ["serve"]
