"""The Reconstructions page's capacity section: a pair trained on a small subset, its training
images beside images it never saw (the tutorial's "encode N points as 1, 2, ..., N" argument:
a decoder with enough capacity can memorise its training set instead of learning the data)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from vae.data import ImageDataset
from vae.errors import LatentExplorerError
from vae.lesson import memorisation, rebuild

from . import lesson, state
from . import scores as sc
from .images import encode_pictures, made_once
from .style import MODEL_LABELS

SHOWN = 8  # images per row


def subset_recipe(checkpoints: dict) -> dict:
    """The training subset the pair was trained on ({} when it saw the whole training split)."""
    return next(iter(checkpoints.values())).dataset.get("subset") or {}


@st.cache_data(show_spinner="Reconstructing 1,000 training and 1,000 test images with each model…", max_entries=8)
def _figures(versions: tuple, judge_key: tuple, _models: dict, _data: ImageDataset, _judge) -> dict:
    return {k: memorisation(m, _data.train, _data.test, _judge) for k, m in _models.items()}


@st.cache_data(show_spinner=False, max_entries=16)
def _rows(versions: tuple, split: str, indices: tuple, _models: dict, _data: ImageDataset) -> dict:
    """Originals and each model's reconstructions [M, H, W, C] in [0, 1], with errors [M]."""
    images = getattr(_data, split).images[list(indices)]
    out = {"input": sc.as_display(images.float() / 255.0)}
    for kind, model in _models.items():
        out[kind] = rebuild(model, images)
    return out


def _row_pictures(rows: dict) -> list:
    """The originals, then each model's reconstructions with its errors, encoded once."""
    shown = [encode_pictures(sc.single_tiles(rows["input"], 2))]
    for kind, (images, errors) in ((k, v) for k, v in rows.items() if k != "input"):
        shown.append(encode_pictures(sc.single_tiles(images, 2), [f"{MODEL_LABELS[kind]} {e:.0f}" for e in errors]))
    return shown


def section(pair, checkpoints: dict, data: ImageDataset | None) -> None:
    st.subheader("5. Memorising or generalising: a pair trained on few images")
    recipe = subset_recipe(checkpoints)
    if not recipe.get("train"):
        st.caption("This pair was trained on the whole training split. Pick **mnist-mlp-1k** in the sidebar (the "
                   "16-D pair's nets trained on only 1,000 images) to see a model that memorised its training set.")
        return
    if data is None:
        st.info("This section needs the pair's data set.")
        return
    try:
        seen = data.apply_subset(recipe)
    except LatentExplorerError as err:
        state.show_error(err, "The images this pair trained on are not available here")
        return
    models = {k: c.model for k, c in checkpoints.items()}
    versions = tuple(sorted((k, str(c.path), Path(c.path).stat().st_mtime_ns) for k, c in checkpoints.items()))
    paths = lesson.judge_paths(pair)
    judge = sc.load_judge(str(paths[0]), paths[0].stat().st_mtime_ns) if paths else None
    figures = _figures(versions, (str(paths[0]), paths[0].stat().st_mtime_ns) if paths else (), models, seen, judge)
    epochs = next(iter(checkpoints.values())).epoch
    st.markdown(claim(figures, len(seen.train), epochs))
    for split, title in (("train", "Images it trained on"), ("test", "Images it never saw")):
        rng = np.random.default_rng(0)
        picked = tuple(sorted(int(i) for i in rng.choice(len(getattr(seen, split)), SHOWN, replace=False)))
        shown = made_once(key=f"capacity|{versions}|{recipe}|{split}|{picked}",
                          _make=lambda: _row_pictures(_rows(versions, split, picked, models, seen)))
        st.markdown(f"**{title}** (top), rebuilt by each model (error in nats below each)")
        for row in shown:
            st.image(list(row.urls), caption=list(row.captions) if row.captions else None)
    table = {"figure": ["recon error, training images (nats)", "recon error, unseen test images (nats)"]
             + (["judge names the right class: training", "judge names the right class: test"] if judge else [])}
    for kind, f in figures.items():
        table[MODEL_LABELS[kind]] = [f"{f['train_recon']:.1f}", f"{f['test_recon']:.1f}"] + (
            [f"{f['train_judged']:.1%}", f"{f['test_judged']:.1%}"] if judge else [])
    st.dataframe(table, hide_index=True)
    st.caption("1,000 images of each split (all of the training subset), each decoded from its code mean. "
               + (f"Judge: {judge.name}." if judge else ""))


def claim(figures: dict, n_train: int, epochs) -> str:
    """What the figures support, and nothing more."""
    head = f"This pair saw only **{n_train:,} training images**, {epochs} times each. "
    if set(figures) != {"ae", "vae"}:
        return head
    ae, vae = figures["ae"], figures["vae"]
    gap = {k: f["test_recon"] - f["train_recon"] for k, f in figures.items()}
    if ae["train_recon"] < vae["train_recon"] and ae["test_recon"] > vae["test_recon"] and gap["ae"] > gap["vae"]:
        return head + (f"The AE rebuilds the images it trained on better than the VAE ({ae['train_recon']:.0f} vs "
                       f"{vae['train_recon']:.0f} nats) and images it never saw worse ({ae['test_recon']:.0f} vs "
                       f"{vae['test_recon']:.0f}): with nothing but reconstruction to optimise, it spends its "
                       "capacity on remembering those images. The VAE's noise and KL term keep it from "
                       "memorising as much, so it generalises better.")
    worse = max(gap, key=gap.get)
    return head + (f"Both models rebuild their training images better than unseen ones; the gap is larger for the "
                   f"{MODEL_LABELS[worse]} ({gap[worse]:.0f} vs {min(gap.values()):.0f} nats).")
