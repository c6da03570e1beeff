# syntax=docker/dockerfile:1
# Hugging Face Space (sdk: docker, app_port: 8501): CPU-only, runs as UID 1000, no persistent disk.
#
# Build arguments; their defaults are the Space's build:
#   BASE_IMAGE       a Python 3.11 image with `python` and `pip` on PATH
#   TORCH_INDEX_URL  where torch and torchvision come from: the CPU-only wheels (PyPI's default
#                    build pulls several GB of CUDA libraries a CPU Space never uses)
#   PIP_FIND_LINKS   local wheel folders pip looks in before the indexes (none on the Space)
# CI builds it with a Debian base and PyPI's torch (.ci/image; see tests/image/test_image.py).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""

RUN useradd --create-home --uid 1000 user
# The Space shows the app in a frame on huggingface.co, where the browser withholds the XSRF
# cookie (a third-party cookie) and every upload would get 403. So XSRF protection is off here,
# and only here (the last variable; .streamlit/config.toml keeps it on locally, the README says why
# this is safe for this app, tests/e2e/test_iframe_upload.py proves both). CORS protection stays on.
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    LATENT_EXPLORER_STATE=/tmp/latent-explorer \
    LATENT_EXPLORER_DATA=/tmp/latent-explorer/data \
    LATENT_EXPLORER_HOSTED=1 \
    LATENT_EXPLORER_TRAIN_THREADS=1 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false
WORKDIR /home/user/app

# torch first, from TORCH_INDEX_URL; requirements.txt pins the same version, which that build
# satisfies, so pip keeps it. pip's cache is a build cache mount: reused by the next build on the
# same builder, never part of the image.
COPY --chown=user requirements.txt .
RUN --mount=type=cache,target=/var/cache/pip \
    pip install --cache-dir /var/cache/pip --index-url "$TORCH_INDEX_URL" torch==2.14.1 torchvision==0.29.1 \
 && pip install --cache-dir /var/cache/pip -r requirements.txt

COPY --chown=user . .
USER user
# The slow latent maps (UMAP, t-SNE) of the shipped pairs, the β dial's measured sweeps, and the
# data sets they show, are built into the image, so a fresh or restarted Space opens them at once
# (a few minutes of build time). Optional: if it fails, the pages compute each on first use.
RUN python -m ui.prebuild || echo "ui.prebuild failed: maps and sweeps will be computed on first use"
EXPOSE 8501
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
