# Hugging Face Space (sdk: docker, app_port: 8501): CPU-only, runs as UID 1000, no persistent disk.
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 user
# The Space shows the app in a frame on huggingface.co, where the browser withholds the XSRF
# cookie (a third-party cookie) and every upload would get 403. So XSRF protection is off here,
# and only here (the last variable; .streamlit/config.toml keeps it on locally, the README says why
# this is safe for this app, tests/e2e/test_iframe_upload.py proves both). CORS protection stays on.
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
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

# CPU-only torch first (the default PyPI wheel pulls several GB of CUDA); requirements.txt pins
# the same version, which the +cpu build satisfies, so pip keeps it.
COPY --chown=user requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install -r requirements.txt

COPY --chown=user . .
USER user
# The slow latent maps (UMAP, t-SNE) of the shipped pairs, and the data sets they show, are built
# into the image, so a fresh or restarted Space opens them at once (a few minutes of build time).
# Optional: if it fails, the pages fit each map on first use, as they would without it.
RUN python -m ui.prebuild || echo "ui.prebuild failed: maps will be fitted on first use"
EXPOSE 8501
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
