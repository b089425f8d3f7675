# trustdiff service image: the API (`trustdiff serve --no-worker`) and the GPU worker
# (`trustdiff worker`) run from it. No model weights are baked in: checkpoints and datasets are
# mounted at /models and /data (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    TRUSTDIFF_HOME=/var/lib/trustdiff \
    TRUSTDIFF_MODEL_ROOT=/models \
    TRUSTDIFF_DATA_ROOT=/data \
    TRUSTDIFF_UPLOAD_DIR=/var/lib/trustdiff/uploads

# A C/C++ compiler for the `compile` option: TorchInductor builds its CPU kernels and Triton its
# CUDA launchers at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the CUDA wheel index, in its own layer: it is by far the largest and the
# slowest-changing dependency, and installing the project afterwards finds it satisfied
# instead of resolving another build. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# gives a small CPU-only image.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY trustdiff ./trustdiff
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# Editable: `trustdiff migrate` finds alembic.ini and migrations/ next to the packages. The
# torch pin again: resolving the rest, pip may otherwise prefer a newer torch to the installed one.
RUN pip install -e ".[service]" "torch==${TORCH_VERSION}" \
    && useradd --system --uid 10001 --home-dir /var/lib/trustdiff trustdiff \
    && mkdir -p /var/lib/trustdiff/uploads /models /data \
    && chown -R trustdiff /var/lib/trustdiff

USER trustdiff
VOLUME ["/var/lib/trustdiff"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/healthz', timeout=4)"
CMD ["trustdiff", "serve", "--no-worker", "--no-migrate", "--host", "0.0.0.0", "--port", "8000"]
