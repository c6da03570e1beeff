"""vae/map_fit.py: a slow map fitted in a child process lands in the projection cache exactly where
`build_latent_map` looks, and a failing child is a clear error, not a hang."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vae.data import load_dataset
from vae.map_fit import MapFitError, fit_in_child, fit_job, write_job
from vae.maps import build_latent_map, data_id, fit_projection
from vae.projections import ProjectionCache
from vae.train import make_pair

ROOT = Path(__file__).resolve().parent.parent


def test_a_child_fits_each_models_map_into_the_cache_the_page_then_loads(tmp_path):
    data = load_dataset("embedded-mnist").limit(train=64, test=80)
    torch.manual_seed(0)
    models = make_pair("mnist-mlp", data.image_shape, latent_dim=4)
    ids, dkey = {"ae": "a" * 64, "vae": "b" * 64}, data_id(data.name, data.test)
    parts, codes = fit_job(models, data.test, "tsne", 60, 0, model_ids=ids, data_key=dkey)
    write_job(tmp_path / "job.npz", tmp_path / "cache", "tsne", 0, parts, codes)
    stages = []
    fit_in_child(tmp_path / "job.npz", lambda i, n, kind: stages.append((i, n, kind)))
    assert stages == [(0, 2, "ae"), (1, 2, "vae"), (2, 2, "done")]
    lmap = build_latent_map(models, data.test, data.classes, "tsne", 60, 0, model_ids=ids, data_key=dkey,
                            cache=ProjectionCache(tmp_path / "cache"))
    assert lmap.from_disk  # nothing fitted in this process
    here = fit_projection("tsne", codes["vae"], 0)  # the same fit in this process: the same map
    np.testing.assert_allclose(lmap.projections["vae"].embedding_, here.embedding_, atol=1e-4)


def test_a_failing_child_raises_with_its_last_words(tmp_path):
    (tmp_path / "job.npz").write_bytes(b"not a job")
    with pytest.raises(MapFitError, match="failed \\(exit status 1\\)") as err:
        fit_in_child(tmp_path / "job.npz")
    assert "Error" in err.value.detail  # the child's exception, for the server's log


def test_a_child_past_its_time_is_killed(tmp_path):
    data = load_dataset("embedded-mnist").limit(train=64, test=80)
    models = make_pair("mnist-mlp", data.image_shape, latent_dim=4)
    parts, codes = fit_job(models, data.test, "tsne", 60, 0, model_ids={"ae": "a", "vae": "b"}, data_key="d")
    write_job(tmp_path / "job.npz", tmp_path / "cache", "tsne", 0, parts, codes)
    with pytest.raises(MapFitError, match="stopped \\(out of time or memory\\)"):
        fit_in_child(tmp_path / "job.npz", timeout_s=0.5)


def test_the_child_fits_without_importing_torch(tmp_path):
    """torch costs a child about 1.3 s and 0.6 GB before it fits anything (issue 19.6: every
    new slow map on the Space is one child): the child's path imports none of it."""
    data = load_dataset("embedded-mnist").limit(train=64, test=80)
    models = make_pair("mnist-mlp", data.image_shape, latent_dim=4)
    parts, codes = fit_job(models, data.test, "umap", 60, 0, model_ids={"ae": "a", "vae": "b"}, data_key="d")
    write_job(tmp_path / "job.npz", tmp_path / "cache", "umap", 0, parts, codes)
    child = ("import sys; from vae.map_fit import run_job; run_job(sys.argv[1]); "
             "print('torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", child, str(tmp_path / "job.npz")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-2:] == ["STAGE 2 2 done", "torch imported: False"], out.stdout
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2  # both fits saved, as the page looks for them
