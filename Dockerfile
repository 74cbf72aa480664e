# syntax=docker/dockerfile:1
# clearly-exporter: `docker run clearly-exporter run --broker redis://redis:6379/0`.
# The same image runs the demo's pieces: `demo --broker URL --role worker|producer`.

# Build stage: the package and its dependencies in a virtual environment, the engine
# compiled by mypyc (1.3-1.5x the event rate) and the render's line writer built (C). The
# full image has the C compiler and Python's headers that takes; neither reaches the
# final image, which needs neither.
FROM python:3.11-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLEARLY_EXPORTER_COMPILE=1
WORKDIR /src
RUN python -m venv /opt/clearly-exporter
COPY pyproject.toml setup.py README.md ./
COPY clearly_exporter ./clearly_exporter
RUN /opt/clearly-exporter/bin/pip install .

# Final stage: the same Python and the virtual environment, run by a non-root user.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="clearly-exporter" \
      org.opencontainers.image.description="Celery monitoring: Prometheus metrics and OTLP traces from the Celery event stream" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 clearly \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin clearly
COPY --from=build /opt/clearly-exporter /opt/clearly-exporter
ENV PATH=/opt/clearly-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 9808
# Slim images have no curl: Python asks /healthz, and a 503 (broker lost) raises.
# Set the port with CLEARLY_EXPORTER_PORT (not --port) for the check to follow it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLEARLY_EXPORTER_PORT', '9808'), timeout=4)"]
ENTRYPOINT ["clearly-exporter"]
CMD ["--help"]
