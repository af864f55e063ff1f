# The dupfinder worker. Build: docker build -t dupfinder .

# The package is built where a C compiler is: the full image has one, for the 32 x 32 shrink
# (worker/core/_shrink.c). The slim image below only installs the wheel.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY worker ./worker
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 dupfinder
WORKDIR /app

# One copy of the code, the installed one (Dramatiq puts the working directory on sys.path, and
# none is here). The build fails if the compiled shrink is missing or disagrees with Pillow. The
# search's loops are compiled into the image (Numba's cache), not at the boot of every container.
ENV NUMBA_CACHE_DIR=/app/.numba-cache
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -r /wheels \
    && python -c "from worker.core.shrink import uses_native; assert uses_native()" \
    && python -c "from worker.core.compiled import compile_ahead; compile_ahead()" \
    && chown -R dupfinder /app/.numba-cache

USER dupfinder
# Processes and threads come from DUPFINDER_PROCESSES / DUPFINDER_THREADS.
ENTRYPOINT ["dupfinder"]
CMD ["worker"]
