import json
import subprocess
import sys

import pytest
import torch

from vae import Checkpoint, CheckpointError, load_checkpoint, make_pair, read_metadata, save_checkpoint


@pytest.fixture
def model():
    torch.manual_seed(0)
    return make_pair("mnist-2d", (1, 28, 28), kinds=("vae",))["vae"]


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path, model):
    path = save_checkpoint(Checkpoint(model, dataset={"name": "blobs"}, metrics={"recon": 1.5},
                                      history=[{"epoch": 1}], epoch=3), tmp_path / "m.safetensors")
    ck = load_checkpoint(path)
    assert ck.config == model.config and ck.epoch == 3 and ck.metrics == {"recon": 1.5}
    z = torch.randn(4, 2)
    model.eval()
    assert torch.allclose(ck.model.decode_images(z), model.decode_images(z))
    assert read_metadata(path)["dataset"] == {"name": "blobs"}


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(Checkpoint(model), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04 a zip, maybe a torch.save file"])
def test_foreign_or_corrupt_files(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="x.safetensors"):
        load_checkpoint(path)


def test_a_torch_pickle_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_safetensors_without_our_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a Latent Explorer checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_weights_that_do_not_match_the_config(tmp_path, model):
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(Checkpoint(model), tmp_path / "m.safetensors")
    meta = read_metadata(path)
    meta["model_config"]["latent_dim"] = 5
    save_file(load_file(path), path, metadata={"latent_explorer": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_sigkill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path, model):
    path = save_checkpoint(Checkpoint(model, epoch=1), tmp_path / "m.safetensors")
    script = f"""
import os, signal, torch, vae.checkpoint as c
from vae import make_pair, Checkpoint
m = make_pair("tutorial-cifar-resnet18", (3, 32, 32), kinds=("vae",))["vae"]  # a big file: slow to write
real = c.save_file
def save_then_die(tensors, filename, metadata):
    real(tensors, filename, metadata=metadata)
    os.kill(os.getpid(), signal.SIGKILL)  # dies after writing the temporary file, before os.replace
c.save_file = save_then_die
c.save_checkpoint(Checkpoint(m, epoch=2), {str(path)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    ck = load_checkpoint(path)
    assert ck.epoch == 1 and ck.config == model.config


def test_strip_optimizer_keeps_the_model_and_shrinks_the_file(tmp_path, model):
    from vae.checkpoint import strip_optimizer

    opt = torch.optim.Adam(model.parameters())
    model.train()
    model.loss(model.preprocess(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))).total.mean().backward()
    opt.step()
    path = save_checkpoint(Checkpoint(model, optimizer_state=opt.state_dict(), epoch=2), tmp_path / "m.safetensors")
    full = path.stat().st_size
    assert load_checkpoint(path).optimizer_state["state"]
    strip_optimizer(path)
    ck = load_checkpoint(path)
    assert ck.optimizer_state is None and ck.epoch == 2 and path.stat().st_size < full / 2
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # readable by the server's user


def test_saving_leaves_the_process_umask_alone_and_sets_the_mode_itself(tmp_path, model, monkeypatch):
    # os.umask is process-wide: changing it even for a moment from the training thread makes any
    # file another thread creates in that moment world-writable
    calls = []
    monkeypatch.setattr("os.umask", lambda *a: calls.append(a) or 0o022)
    path = save_checkpoint(Checkpoint(model), tmp_path / "m.safetensors")
    assert calls == []
    assert path.stat().st_mode & 0o777 == 0o644
