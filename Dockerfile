# caremesh: one image, one command (`caremesh <role>`); the role is the container's argument.
FROM python:3.11-slim AS build
# A C compiler for the pseudonymisation engine's compiled modules (mypyc); it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY scripts/install-prefix.sh ./scripts/
# caremesh and its pinned dependencies into /install, the engine's hot modules compiled into the
# installed package; the build fails unless `caremesh native status` reports them in use.
RUN PIP_NO_CACHE_DIR=1 PYTHON=python scripts/install-prefix.sh /install

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/caremesh --create-home caremesh
COPY --from=build /install /usr/local
USER 10001
WORKDIR /var/lib/caremesh
ENV CAREMESH_STATE_DIR=/var/lib/caremesh \
    CAREMESH_WORKER__DATA_DIR=/var/lib/caremesh/worker \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["caremesh"]
CMD ["--help"]
