# caremesh: one image, one command (`caremesh <role>`); the role is the container's argument.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

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
