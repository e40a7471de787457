# The regionguard services image: `regionguard <health|router|replayer|features|status> --config FILE`.
# Built by docker-compose.yml; the Helm chart (deploy/helm/regionguard, docs/kubernetes.md) runs the same image.
# Dependencies come from requirements.lock (pinned, hashed; `make lock` writes it, `make lock-check`
# and tests/unit/test_lock.py fail when it drifts from pyproject.toml), so every build installs the same set.
FROM python:3.11-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/regionguard
COPY requirements.lock ./
RUN /opt/regionguard/bin/pip install --require-hashes --no-deps -r requirements.lock
# README.md* : pyproject.toml names the README; the glob keeps the build working without it
COPY pyproject.toml README.md* ./
COPY services ./services
COPY clients/python ./clients/python
# the dependencies are all in place from the lock: install only regionguard and its client SDK
# (regionguard-client, from this checkout: the lock leaves it out)
RUN /opt/regionguard/bin/pip install --no-deps ./clients/python . \
    && /opt/regionguard/bin/pip check

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/regionguard/bin:$PATH

COPY --from=build /opt/regionguard /opt/regionguard
COPY deploy/docker/healthcheck.py /usr/local/lib/regionguard-healthcheck.py
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin regionguard

WORKDIR /
USER 10001:10001
# GET /livez on the service's metrics port (found from PID 1's command line; set
# REGIONGUARD_LIVEZ_PORT when metrics.port is not the default 9400)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/regionguard-healthcheck.py"]
ENTRYPOINT ["regionguard"]
CMD ["--help"]
