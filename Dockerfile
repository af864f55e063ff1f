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
# Installed, then the sources removed: one copy of the code (Dramatiq puts the working directory
# on sys.path). The compiled loops (image shrink, search index) are built into the image (Numba's
# cache), not at the boot of every container.
ENV NUMBA_CACHE_DIR=/app/.numba-cache
RUN pip install . \
    && rm -r schemas worker \
    && python -c "from worker.core.compiled import compile_ahead; compile_ahead()" \
    && chown -R dupfinder /app/.numba-cache

USER dupfinder
# Processes and threads come from DUPFINDER_PROCESSES / DUPFINDER_THREADS.
ENTRYPOINT ["dupfinder"]
CMD ["worker"]
