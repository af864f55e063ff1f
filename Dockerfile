# The dupfinder worker. Build: docker build -t dupfinder .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 dupfinder
WORKDIR /app

COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY worker ./worker
RUN pip install .

USER dupfinder
# Processes and threads come from DUPFINDER_PROCESSES / DUPFINDER_THREADS.
ENTRYPOINT ["dupfinder"]
CMD ["worker"]
