"""One process of tests/test_distributed.py's 2-process run, started by
`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT NPZ`.

Starting processes is the slow part (each imports torch), so one launch plays every scenario
and leaves its results in OUT for the tests to check:
- fused-rank{r}.pt, autograd-rank{r}.pt: weights, buffers and test figures after 2 epochs of
  the tiny pair (autograd adds a BatchNorm model), and fused-{ae,vae}.safetensors;
- stopped-{ae,vae}.safetensors: rank 0 alone asks to stop at step 11 (mid-epoch 2);
  resumed-rank{r}.pt: the weights after resuming it under the same 2 processes;
- cli-rank{r}.log and cli-rank{r}.rc, cli-{ae,vae}.safetensors: `python -m vae.train`'s
  `train_main` under torchrun (last: it closes the process group when done).
"""
import contextlib
import sys
import threading
from pathlib import Path

import torch

from vae import Callback, TrainConfig, Trainer, load_checkpoint
from vae.cli import train_main
from vae.distributed import init_from_env
from vae.models import Autoencoder, ModelConfig


def tiny_pair(batchnorm: bool = False) -> dict[str, Autoencoder]:
    torch.manual_seed(0)  # the same initial weights on both ranks as in the test's single process
    models = {k: Autoencoder(ModelConfig(family="mlp", hidden=(64,), latent_dim=2, variational=k == "vae"))
              for k in ("ae", "vae")}
    if batchnorm:  # the tutorial's MLP: BatchNorm running statistics, autograd only
        models["bn"] = Autoencoder(ModelConfig(family="tutorial-mlp", latent_dim=4, likelihood="gaussian-fixed",
                                               data_range="symmetric", batchnorm_momentum=0.7))
    return models


CONFIG = dict(epochs=2, batch_size=32, lr=3e-3, device="cpu")  # 256 images: 8 global steps per epoch


class StopOnThisRankAt(Callback):
    def __init__(self, step, event):
        self.step, self.event = step, event

    def on_step_end(self, p):
        if p.step == self.step:
            self.event.set()


def state(models, result) -> dict:
    return {"weights": {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in models.items()},
            "test": result.progress.test, "history": result.history, "step": result.progress.step}


def main(out: Path, npz: str) -> None:
    from conftest import make_blobs_dataset  # tests/conftest.py: this script's folder is on sys.path

    torch.set_num_threads(1)
    group, _ = init_from_env("cpu")
    rank, data = group.rank, make_blobs_dataset()
    assert group.world_size == 2 and group.backend == "gloo", group

    for backend in ("fused", "autograd"):
        models = tiny_pair(batchnorm=backend == "autograd")
        paths = {k: out / f"{backend}-{k}.safetensors" for k in ("ae", "vae")}
        result = Trainer(models, data, TrainConfig(backend=backend, **CONFIG), out=paths, distributed=group).fit()
        torch.save(state(models, result), out / f"{backend}-rank{rank}.pt")

    stop = threading.Event()
    paths = {k: out / f"stopped-{k}.safetensors" for k in ("ae", "vae")}
    callbacks = [StopOnThisRankAt(11, stop)] if rank == 0 else []
    Trainer(tiny_pair(), data, TrainConfig(**CONFIG), callbacks=callbacks, stop_event=stop, out=paths,
            distributed=group).fit()
    resume = {k: load_checkpoint(p) for k, p in paths.items()}
    models = tiny_pair()
    result = Trainer(models, data, TrainConfig(**CONFIG), resume=resume, distributed=group).fit()
    torch.save(state(models, result), out / f"resumed-rank{rank}.pt")

    log = out / f"cli-rank{rank}.log"
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        code = train_main(["--preset", "mnist-2d", "--data", npz, "--epochs", "1", "--batch-size", "8",
                           "--out", str(out / "cli"), "--device", "cpu"])
    (out / f"cli-rank{rank}.rc").write_text(str(code))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
