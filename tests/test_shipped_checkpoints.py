"""Every shipped checkpoint loads safely, matches its model card, and decodes (no ../shared)."""
from pathlib import Path

import pytest
import torch

from vae import load_checkpoint, read_metadata

CKPT = Path(__file__).resolve().parent.parent / "checkpoints"
# the pairs; the beta sweeps (sweep-*-beta-*.safetensors) have their own table, checked in test_beta.py
FILES = sorted(p for p in CKPT.glob("*.safetensors") if not p.name.startswith(("classifier-", "sweep-")))


def card_rows() -> dict[str, dict]:
    """Rows of the model card's main table, keyed by file name."""
    text = (CKPT / "README.md").read_text()
    lines = [l for l in text.splitlines() if l.startswith("| `") and ".safetensors`" in l]
    header = next(l for l in text.splitlines() if l.startswith("| file |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for line in lines:
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(cols, cells))
    return rows


def test_checkpoints_are_shipped_small_and_all_in_the_card():
    assert len(FILES) >= 8, "the 2-D, tutorial, 16-D MNIST and CIFAR-10 pairs"
    assert all(p.stat().st_size < 10e6 for p in FILES)
    assert sum(p.stat().st_size for p in FILES) < 60e6
    assert sum(p.stat().st_size for p in CKPT.glob("sweep-*.safetensors")) < 30e6  # issue 18's budget
    assert set(card_rows()) >= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_checkpoint_matches_its_card_and_decodes(path):
    row = card_rows()[path.name]
    ck = load_checkpoint(path)  # safetensors: no pickle is ever run
    assert ck.config.preset == row["preset"]
    assert ck.config.latent_dim == int(row["latent"])
    assert ck.epoch == int(row["epochs"])
    assert ck.config.kind == row["model"]
    key = "neg_elbo" if ck.config.variational else "recon"
    assert f"{ck.metrics[key]:.2f}" == row["-ELBO / recon (nats)"]
    z = torch.randn(3, ck.config.latent_dim)
    images = ck.model.decode_images(z)
    assert images.shape == (3, *ck.config.image_shape) and 0 <= float(images.min()) <= float(images.max()) <= 1


def test_shipped_pairs_are_complete():
    names = {p.name.rsplit("-", 1)[0] for p in FILES}
    for name in names:
        kinds = {read_metadata(CKPT / f"{name}-{k}.safetensors")["model_config"]["variational"] for k in ("ae", "vae")}
        assert kinds == {False, True}
