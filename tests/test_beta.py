"""β sweeps: one command trains a family from the AE to collapsed VAEs on the same batches; the
catalog finds it; float16 storage keeps the figures; the β dial page shows every member."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vae import load_checkpoint
from vae.cli import train_main
from vae.sweep import find_families, member_name, sweep_models

ROOT = Path(__file__).resolve().parent.parent


def test_sweep_models_are_the_ae_at_zero_and_vaes_with_their_beta_from_one_seed():
    models = sweep_models("mnist-2d", (1, 28, 28), [1, 0, 4], seed=3)
    assert list(models) == ["beta-0", "beta-1", "beta-4"]
    assert not models["beta-0"].config.variational
    assert [m.config.beta for m in list(models.values())[1:]] == [1, 4]
    again = sweep_models("mnist-2d", (1, 28, 28), [0, 1, 4], seed=3)
    for name in models:  # the same seed, the same initial weights: only beta differs
        for a, b in zip(models[name].state_dict().values(), again[name].state_dict().values()):
            assert torch.equal(a, b)
    torch.testing.assert_close(models["beta-1"].decoder.state_dict(), models["beta-4"].decoder.state_dict())
    assert member_name(0.1) == "beta-0.1" and member_name(1.0) == "beta-1"


def test_one_command_trains_a_family_the_catalog_finds(bands_npz, tmp_path, capsys):
    code = train_main(["--preset", "mnist-2d", "--data", str(bands_npz), "--epochs", "1", "--batch-size", "64",
                       "--beta", "0,0.5,4", "--weights-only", "--float16", "--out", str(tmp_path / "sw")])
    out = capsys.readouterr().out
    assert code == 0 and "beta-0.5" in out
    assert len(re.findall(r"float16\)", out)) == 3  # every member kept at half size: figures moved < 0.5%
    [family] = find_families([tmp_path])
    assert family.name == "sw" and family.betas == [0.0, 0.5, 4.0] and family.latent_dim == 2
    members = {b: load_checkpoint(p) for b, p in family.members}
    assert not members[0.0].config.variational and members[4.0].config.beta == 4.0
    histories = {b: [h["epoch"] for h in m.history] for b, m in members.items()}
    assert len(set(map(tuple, histories.values()))) == 1  # trained in lockstep
    size = Path(family.path(0.5)).stat().st_size
    assert size < 0.6 * 4.3e6  # float16 weights: about half of the float32 file


def test_a_list_of_betas_is_checked(capsys):
    with pytest.raises(SystemExit):
        train_main(["--preset", "mnist-2d", "--beta", "0,-1"])
    assert "distinct numbers >= 0" in capsys.readouterr().err


def test_the_dial_page_shows_every_member_and_moves(bands_npz, tmp_path, monkeypatch, capsys):
    from streamlit.testing.v1 import AppTest

    state = tmp_path / "state"
    assert train_main(["--preset", "mnist-2d", "--data", str(bands_npz), "--epochs", "1", "--batch-size", "64",
                       "--beta", "0,1,8", "--weights-only", "--out", str(state / "trained" / "tiny")]) == 0
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(state))
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(tmp_path / "none"))  # only the tiny family
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app_pages" / "6_Beta_dial.py"), default_timeout=240).run()
    assert not at.exception
    [slider] = at.select_slider
    assert [m.value for m in at.markdown if m.value.startswith("**β = 0** (the AE)")], [m.value for m in at.markdown]
    assert len(at.dataframe) == 1 and len(at.get("plotly_chart")) == 1
    at = slider.set_value(8.0).run()
    assert not at.exception
    shown = [m.value for m in at.markdown if m.value.startswith("**β = 8**")]
    assert shown and "code dimensions active" in shown[0]


def sweep_card() -> dict[tuple[str, float], list[str]]:
    text = (ROOT / "checkpoints" / "README.md").read_text()
    rows = re.findall(r"^\| (sweep-[\w-]+) \| ([\d.]+) \| (.+) \|$", text, flags=re.M)
    return {(name, float(beta)): [c.strip() for c in rest.split("|")] for name, beta, rest in rows}


def test_the_shipped_sweeps_match_their_table():
    from vae.classifier import load_classifier
    from vae.lesson import judge_images, prior_sample_images

    card = sweep_card()
    families = {f.name: f for f in find_families([ROOT / "checkpoints"])}
    assert set(families) == {"sweep-mnist-2d", "sweep-mnist-mlp"}
    judges = [load_classifier(ROOT / "checkpoints" / f"classifier-mnist{s}.safetensors") for s in ("", "-mlp")]
    for name, family in families.items():
        assert family.betas == [0, 0.1, 0.3, 1, 3, 10]
        for beta, path in family.members:
            ck = load_checkpoint(path)
            recon, kl, elbo, _, cnn, mlp, *_ = card[(name, beta)]
            assert float(recon) == pytest.approx(ck.metrics["recon"], abs=0.006)
            assert float(kl) == pytest.approx(ck.metrics.get("kl", 0.0), abs=0.006)
            assert float(elbo) == pytest.approx(ck.metrics.get("neg_elbo", ck.metrics["recon"]), abs=0.006)
            prior = prior_sample_images(ck.model)
            for judge, stated in zip(judges, (cnn, mlp)):
                assert judge_images(judge, prior).recognised == pytest.approx(float(stated), abs=0.0015)


def test_a_member_round_trips_through_its_disk_cache_and_only_its_own_key_finds_it(tmp_path):
    import numpy as np

    from vae.sweep import Member, MemberCache, member_key

    rng = np.random.default_rng(0)
    member = Member(0.5, {"recon": 101.5, "kl": 7.25, "active_units": 2.0, "prior_recognised [CNN]": 0.625},
                    rng.normal(size=(30, 2)).astype(np.float32), rng.integers(0, 3, 30), rng.random((4, 28, 28, 1)),
                    rng.random((16, 28, 28, 1)), rng.random((2, 28, 28, 1)))
    cache, key = MemberCache(tmp_path), member_key("a" * 64, "bands/test/120/x", ["j1", "j2"])
    cache.save(key, member)
    back = cache.load(key)
    assert back.beta == 0.5 and back.figures == member.figures
    for name in ("points", "labels", "grid", "samples", "recons"):
        np.testing.assert_array_equal(getattr(back, name), getattr(member, name))
    assert cache.load(member_key("b" * 64, "bands/test/120/x", ["j1", "j2"])) is None  # another checkpoint
    assert cache.load(member_key("a" * 64, "bands/test/120/x", ["j1"])) is None  # other judges
    cache.path_for(key).write_bytes(b"torn")
    assert cache.load(key) is None  # a torn file is a miss, not an error


def test_the_dial_is_served_from_the_prebuilt_cache_and_a_changed_checkpoint_is_measured_again(
        bands_npz, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import vae.sweep
    from ui import beta
    from ui.prebuild import prebuild_sweeps
    from vae.checkpoint import save_checkpoint

    shipped = tmp_path / "shipped"
    assert train_main(["--preset", "mnist-2d", "--data", str(bands_npz), "--epochs", "1", "--batch-size", "64",
                       "--beta", "0,1,8", "--weights-only", "--out", str(shipped / "tiny")]) == 0
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(shipped))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear(), st.cache_data.clear()
    [line] = prebuild_sweeps()  # what the Dockerfile runs at build time
    assert re.fullmatch(r"tiny β dial \(3 members\): 3 of 3 measured and saved in [\d.]+ s", line), line
    real_view, measured = vae.sweep.member_view, []

    def counting_view(ckpt, *args, **kwargs):
        measured.append(ckpt.config.beta if ckpt.config.variational else 0.0)
        return real_view(ckpt, *args, **kwargs)

    monkeypatch.setattr(vae.sweep, "member_view", counting_view)
    st.cache_resource.clear(), st.cache_data.clear()  # a restarted server: only the disk cache is left
    at = AppTest.from_file(str(ROOT / "app_pages" / "6_Beta_dial.py"), default_timeout=240).run()
    assert not at.exception and measured == []  # nothing measured: every panel came from the disk
    assert [m.value for m in at.markdown if m.value.startswith("**β = 0** (the AE)")]
    assert at.select_slider[0].options == ["0", "1", "8"]

    [family] = beta.families()
    ckpt = load_checkpoint(family.path(8.0))
    with torch.no_grad():
        next(ckpt.model.decoder.parameters()).mul_(0.5)  # a retrained member: other weights, same name
    save_checkpoint(ckpt, family.path(8.0))
    st.cache_resource.clear(), st.cache_data.clear()
    members, count = beta.members(family)
    assert measured == [8.0] and count == 1  # only the changed checkpoint is measured again
    assert [m.beta for m in members] == [0.0, 1.0, 8.0]
