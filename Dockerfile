# The regionguard services image: `regionguard <health|router|replayer|features|status> --config FILE`.
# Built by docker-compose.yml; works the same on ECS/Kubernetes with the config mounted.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README.md* : pyproject.toml names the README; the glob keeps the build working without it
COPY pyproject.toml README.md* ./
COPY services ./services
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin regionguard \
    && rm -rf /src

WORKDIR /
USER regionguard
ENTRYPOINT ["regionguard"]
CMD ["--help"]
