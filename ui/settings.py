"""Server settings read from the environment (a Hugging Face Space sets SPACE_ID)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    hosted: bool  # a public, shared server: limit what visitors can do
    shipped_dir: Path  # checkpoints that come with the app
    trained_dir: Path  # checkpoints trained in the app
    cache_dir: Path  # projections and other computed-once results
    uploads_dir: Path  # visitors' data sets, stored by content hash
    max_running_jobs: int
    max_jobs_per_visitor: int  # hosted: queued + running jobs one browser session may have
    train_threads: int  # torch threads for a background training job (the server needs a core)
    max_epochs: int
    max_batch_size: int
    max_latent_dim: int
    max_train_images: int | None
    allow_local_paths: bool  # may a visitor type a server path as a data source?
    max_upload_mb: int
    max_slow_map_points: int | None  # hosted: test images in a new UMAP / t-SNE map (fitted in the background)
    uploads_max_age_h: float  # a stored upload unused this long is deleted
    uploads_max_total_mb: int  # and the least recently used go while all of them exceed this


def load_settings() -> Settings:
    hosted = _flag("LATENT_EXPLORER_HOSTED", bool(os.environ.get("SPACE_ID")))
    state = Path(os.environ.get("LATENT_EXPLORER_STATE", ROOT / ".cache" / "state"))
    return Settings(
        hosted=hosted,
        shipped_dir=Path(os.environ.get("LATENT_EXPLORER_CHECKPOINTS", ROOT / "checkpoints")),
        trained_dir=state / "trained",
        cache_dir=state / "cache",
        uploads_dir=state / "uploads",
        max_running_jobs=int(os.environ.get("LATENT_EXPLORER_MAX_JOBS", "1")),
        max_jobs_per_visitor=int(os.environ.get("LATENT_EXPLORER_MAX_JOBS_PER_VISITOR", "2")),
        train_threads=int(os.environ.get("LATENT_EXPLORER_TRAIN_THREADS", "1")),
        max_epochs=int(os.environ.get("LATENT_EXPLORER_MAX_EPOCHS", "20" if hosted else "200")),
        max_batch_size=int(os.environ.get("LATENT_EXPLORER_MAX_BATCH", "1024" if hosted else "4096")),
        max_latent_dim=int(os.environ.get("LATENT_EXPLORER_MAX_LATENT", "256" if hosted else "512")),
        max_train_images=int(os.environ["LATENT_EXPLORER_MAX_TRAIN"]) if "LATENT_EXPLORER_MAX_TRAIN" in os.environ
        else (20_000 if hosted else None),
        allow_local_paths=_flag("LATENT_EXPLORER_LOCAL_PATHS", not hosted),
        max_upload_mb=int(os.environ.get("LATENT_EXPLORER_MAX_UPLOAD_MB", "50")),
        max_slow_map_points=int(os.environ["LATENT_EXPLORER_MAX_SLOW_MAP"]) if "LATENT_EXPLORER_MAX_SLOW_MAP" in os.environ
        else (2000 if hosted else None),
        uploads_max_age_h=float(os.environ.get("LATENT_EXPLORER_UPLOADS_MAX_AGE_H", "24")),
        uploads_max_total_mb=int(os.environ.get("LATENT_EXPLORER_UPLOADS_MAX_TOTAL_MB", "1024")),
    )
