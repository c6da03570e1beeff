"""Training: a `Trainer` that knows nothing of the app or the terminal (minGPT's trainer).

It trains one or more models *in lockstep on the same batches* (the AE and the VAE of a pair
see identical data in identical order, so their curves compare), reports through callbacks,
stops within a step when its `threading.Event` is set, evaluates on the test split each
epoch, and saves checkpoints. The CLI (`python -m vae.train`) and the app are two observers.

Given a `Distributed` group (vae/distributed.py, under `torchrun`), each process trains on its
shard of every batch and the gradients are averaged across processes, so N processes take the
steps one process would take with the same global batch (`TrainConfig.batch_size`). How a step
computes its gradients (autograd, torch.compile or the hand-written gradient of the MLPs, and
how each keeps the processes in step) is `TrainConfig.backend` (vae/steps.py).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .checkpoint import Checkpoint, save_checkpoint
from .data import ImageDataset, ImageSplit
from .device import pick_device
from .distributed import (SINGLE, Distributed, all_reduce_means, all_reduce_sum, any_rank, broadcast_module,
                          gather_objects, shard)
from .errors import ConfigError
from .metrics import likelihood_metrics
from .models import Autoencoder
from .steps import BACKENDS, make_step, resolve_backend


PRECISIONS = ("float32", "bfloat16")
_GLOBAL_RNG_LOCK = threading.Lock()  # held while this module seeds or draws from torch's global generator


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # images per step over all processes (each of N takes batch_size / N)
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 0  # epochs between checkpoints; 0: only at the end (and on stop)
    eval_batch_size: int = 1000
    num_threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    device: str = "auto"
    # how a step computes its gradients (vae/steps.py): "autograd", "compile", "fused", or "auto":
    # the fastest that supports the model (fused for MLP + Bernoulli models, else autograd)
    backend: str = "auto"
    # "bfloat16": matrix products (and convolutions) on bfloat16 operands, float32 weights,
    # optimizer and loss (mixed precision). Faster matmuls on CPUs with AVX512-BF16 or AMX and
    # on recent GPUs, much slower on CPUs without them (bench/README.md); evaluation stays float32.
    precision: str = "float32"

    def __post_init__(self) -> None:
        checks = [
            ("epochs", _is_int(self.epochs) and 1 <= self.epochs <= 10_000, "an integer from 1 to 10000"),
            ("batch_size", _is_int(self.batch_size) and 1 <= self.batch_size <= 65_536, "an integer from 1 to 65536"),
            ("lr", isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= 1, "a number in (0, 1]"),
            ("checkpoint_every", _is_int(self.checkpoint_every) and self.checkpoint_every >= 0, "an integer >= 0"),
            ("eval_batch_size", _is_int(self.eval_batch_size) and self.eval_batch_size >= 1, "an integer >= 1"),
            ("num_threads", _is_int(self.num_threads) and 0 <= self.num_threads <= 256, "an integer from 0 to 256"),
            ("seed", _is_int(self.seed) and 0 <= self.seed < 2**63, "an integer from 0 to 2**63 - 1"),
            ("backend", self.backend in BACKENDS, f"one of {BACKENDS}"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid: expected {expected}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to us


@dataclass(frozen=True)
class Progress:
    """An immutable snapshot handed to callbacks (safe to keep and read from another thread)."""

    phase: str  # "train", "eval", "epoch_end", "done" or "stopped"
    epoch: int  # epochs completed when phase is epoch_end/done; the running epoch (1-based) otherwise
    epochs: int
    step: int
    steps_per_epoch: int
    losses: dict  # model name -> {"recon", "kl", "total"}: running means over this epoch
    images_per_s: float
    eta_s: float
    elapsed_s: float
    test: dict = field(default_factory=dict)  # model name -> likelihood_metrics of the last evaluation

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


class Callback:
    """Override what you need; the trainer calls these from its own thread."""

    def on_step_end(self, progress: Progress) -> None: ...

    def on_epoch_end(self, progress: Progress, models: dict[str, Autoencoder]) -> None: ...

    def on_train_end(self, progress: Progress) -> None: ...

    def on_checkpoint(self, epoch: int, paths: dict[str, Path]) -> None:
        """After the checkpoints of `epoch` epochs (plus a stopped epoch's batches) are on disk."""


@dataclass
class TrainResult:
    progress: Progress
    stopped: bool
    checkpoints: dict[str, Path]
    history: dict[str, list]
    wall_s: float


class Trainer:
    def __init__(self, models: dict[str, Autoencoder], data: ImageDataset, config: TrainConfig,
                 callbacks: list[Callback] | None = None, stop_event: threading.Event | None = None,
                 out: dict[str, str | Path] | None = None, resume: dict[str, Checkpoint] | None = None,
                 save_optimizer: bool = True, distributed: Distributed | None = None):
        if not models:
            raise ConfigError("models is empty: give at least one model to train")
        for name, m in models.items():
            if tuple(m.config.image_shape) != tuple(data.image_shape):
                raise ConfigError(f"model {name!r} expects images {m.config.image_shape}, "
                                  f"data set {data.name!r} has {data.image_shape}")
        self.models, self.data, self.config = models, data, config
        self.dist = distributed or SINGLE
        world = self.dist.world_size
        if config.batch_size % world:
            raise ConfigError(f"batch_size={config.batch_size} is the batch of all {world} processes together: "
                              f"give a multiple of {world}")
        if len(data.test) < world:
            raise ConfigError(f"{len(data.test)} test images cannot be shared among {world} processes")
        self.callbacks = list(callbacks or [])
        self.stop_event = stop_event or threading.Event()
        self.out = {k: Path(v) for k, v in (out or {}).items()}
        self.save_optimizer = save_optimizer  # False: smaller files that cannot resume exactly
        self.device = pick_device(config.device)
        # where each model came from: fit() trains them on self.device and puts them back, so that
        # code using them after training (on the CPU tensors it has) works on a GPU machine too
        self._home = {name: next(m.parameters()).device for name, m in models.items()}
        self.history: dict[str, list] = {name: [] for name in models}
        self.start_epoch, self.start_batch = 0, 0  # a resume starts here: epochs done, then batches done
        self._resume_state: dict[str, dict] = {}  # name -> the trainer_state a mid-epoch stop saved
        self.test: dict[str, dict] = {}
        # each process evaluates every world-th test image (no padding: no image counted twice)
        mine = torch.arange(len(data.test))[self.dist.rank::world]
        self._test_shard = data.test if world == 1 else ImageSplit(data.test.images[mine], data.test.labels[mine])
        self.optimizers = {name: self._make_optimizer(m) for name, m in models.items()}
        # checked now, built by fit(): under torchrun a step's construction syncs the processes
        self.backends = {name: resolve_backend(m, config.backend, self.dist) for name, m in models.items()}
        self.steps: dict = {}
        if resume:
            self._resume(resume)

    def _make_optimizer(self, model: Autoencoder) -> torch.optim.Optimizer:
        model.to(self.device)
        try:  # the fused kernel updates all parameters in one pass (CPU and CUDA, torch >= 2.4)
            return torch.optim.Adam(model.parameters(), lr=self.config.lr, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(model.parameters(), lr=self.config.lr, foreach=True)

    def _resume(self, resume: dict[str, Checkpoint]) -> None:
        positions = {(ck.epoch, ck.batches_done) for ck in resume.values()}  # every process reads the same files
        if len(positions) != 1:
            raise ConfigError(f"cannot resume models saved at different (epoch, batch) positions {sorted(positions)}")
        self.start_epoch, self.start_batch = positions.pop()
        if self.start_batch:
            self._check_mid_epoch_resume(next(iter(resume.values())))
            self._resume_state = {name: ck.trainer_state for name, ck in resume.items()}
        for name, ck in resume.items():
            self.models[name].load_state_dict(ck.model.state_dict())
            if ck.optimizer_state is not None:
                self.optimizers[name].load_state_dict(ck.optimizer_state)
                for group in self.optimizers[name].param_groups:
                    group["lr"] = self.config.lr
            self.history[name] = list(ck.history)
            self.test[name] = dict(ck.metrics)

    def _check_mid_epoch_resume(self, ck: Checkpoint) -> None:
        """A stop mid-epoch resumes at the next batch of the same shuffle and noise stream: only
        the seed, batch size, training split, kind of device and number of processes that drew them
        can continue them (each process has its own shard and noise stream)."""
        saved = {"seed": ck.train.get("seed"), "batch_size": ck.train.get("batch_size"),
                 "training images": ck.dataset.get("train_size"),
                 "device": str(ck.extra.get("device", "")).split(":")[0],  # its noise generator's kind
                 "processes": int(ck.extra.get("world_size", 1))}
        here = {"seed": self.config.seed, "batch_size": self.config.batch_size,
                "training images": len(self.data.train), "device": self.device.type,
                "processes": self.dist.world_size}
        differ = [f"{k} {saved[k]} (now {here[k]})" for k in saved if saved[k] != here[k]]
        if differ:
            raise ConfigError(f"{ck.path or 'the checkpoint'} was stopped {ck.batches_done} batches into epoch "
                              f"{ck.epoch + 1} with {', '.join(differ)}: resume with the same values")

    # --- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        with _GLOBAL_RNG_LOCK:  # not while another thread builds a seeded model (make_pair)
            torch.manual_seed(cfg.seed)
        for m in self.models.values():
            m.to(self.device)  # a second fit() after the first put them back
        self.steps = {name: make_step(m, self.optimizers[name], self.backends[name], precision=cfg.precision,
                                      distributed=self.dist) for name, m in self.models.items()}
        world = self.dist.world_size
        train = self.data.train
        # the whole split, resident, one row per image: index_select on rows is much faster than
        # indexing the 4-D tensor (bench/README.md)
        rows = train.images.to(self.device).flatten(1)
        steps_per_epoch = math.ceil(math.ceil(len(train) / world) / (cfg.batch_size // world))
        step = self._start_step = self.start_epoch * steps_per_epoch + self.start_batch
        self._clock = _Throughput(cfg.epochs * steps_per_epoch - step)
        progress = self._progress("train", self.start_epoch, step, steps_per_epoch, {})
        stopped, completed, position = False, self.start_epoch, None
        for epoch in range(self.start_epoch, cfg.epochs):
            batches, noise_gen, sums, seen = self._epoch_start(epoch)
            for m in self.models.values():
                m.train()
            for idx in batches:
                if any_rank(self.dist, self.stop_event.is_set()):  # all processes stop at the same step
                    stopped, position = True, (step - epoch * steps_per_epoch, noise_gen, sums)
                    break
                batch = rows.index_select(0, idx.to(self.device)).view(-1, *train.images.shape[1:])
                for name, model in self.models.items():
                    sums[name] += self._step(name, batch, noise_gen)
                seen += len(idx)
                step += 1
                self._clock.tick(len(idx) * world)
                progress = self._progress("train", epoch + 1, step, steps_per_epoch, sums, seen)
                for cb in self.callbacks:
                    cb.on_step_end(progress)
            if stopped:
                break
            progress = self._end_epoch(epoch + 1, step, steps_per_epoch, sums, seen)
            completed = epoch + 1
        phase = "stopped" if stopped else "done"
        checkpoints = self._save_all(completed, stopped, position) if self.out else {}
        progress = replace(progress, phase=phase, eta_s=0.0)
        for cb in self.callbacks:
            cb.on_train_end(progress)
        for name, m in self.models.items():
            m.to(self._home[name])
        return TrainResult(progress, stopped, checkpoints, self.history, self._clock.elapsed())

    def _epoch_start(self, epoch: int) -> tuple[tuple, torch.Generator, dict, int]:
        """The epoch's batches (index tensors), its noise generator, running loss sums and images
        seen: fresh, or, in the epoch a stop mid-epoch left, from where it left them (the batches
        it trained are skipped, not trained twice)."""
        cfg, rank, world = self.config, self.dist.rank, self.dist.world_size
        # per-epoch seeds: a resumed run draws the same batches and noise as an unbroken one. The
        # order is the same on every process, each takes its shard of it; the noise is each
        # process's own (rank 0's is the single-process stream)
        order_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, ORDER_STREAM))
        noise_seed = _rank_seed(epoch_seed(cfg.seed, epoch, NOISE_STREAM), rank)
        noise_gen = torch.Generator(device=self.device).manual_seed(noise_seed)
        order = shard(torch.randperm(len(self.data.train), generator=order_gen), rank, world)
        local_batch = cfg.batch_size // world
        batches = order.split(local_batch)
        sums = {name: torch.zeros(3, device=self.device) for name in self.models}
        done = self.start_batch if epoch == self.start_epoch else 0
        if done:
            state = next(iter(self._resume_state.values()))
            noise_gen.set_state((state["noise_generators"][rank] if world > 1 else state["noise_generator"]).clone())
            # the saved sums are over all processes: each takes its share, the epoch's all-reduce adds them up
            sums = {name: self._resume_state[name]["loss_sums"].to(self.device) / world for name in self.models}
        return batches[done:], noise_gen, sums, done * local_batch

    def _step(self, name: str, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        terms = self.steps[name](self.models[name].preprocess(batch), gen)
        # sums stay on the device: no host sync per step (a .item() would stall a GPU)
        return torch.stack([terms.recon.sum(), terms.kl.sum(), terms.total.sum()]).detach()

    def _end_epoch(self, epoch: int, step: int, steps_per_epoch: int, sums: dict, seen: int) -> Progress:
        # the sums of all processes: what one process would have summed over the whole epoch
        sums, seen = {name: all_reduce_sum(self.dist, s) for name, s in sums.items()}, seen * self.dist.world_size
        train_means = self._means(sums, seen)
        for cb in self.callbacks:
            cb.on_step_end(self._progress("eval", epoch, step, steps_per_epoch, sums, seen))
        for name, model in self.models.items():
            broadcast_module(self.dist, model)  # BatchNorm statistics: each process kept its own shard's
            local = likelihood_metrics(model, self._test_shard, self.config.eval_batch_size,
                                       seed=self.config.seed, device=self.device)
            self.test[name] = all_reduce_means(self.dist, local, len(self._test_shard))
            self.history[name].append({"epoch": epoch, "train": train_means[name], "test": self.test[name],
                                       "wall_s": round(self._clock.elapsed(), 2)})
        progress = self._progress("epoch_end", epoch, step, steps_per_epoch, sums, seen)
        for cb in self.callbacks:
            cb.on_epoch_end(progress, self.models)
        every = self.config.checkpoint_every
        if self.out and every and epoch % every == 0 and epoch < self.config.epochs:
            self._save_all(epoch, stopped=False)
        return progress

    def _means(self, sums: dict, seen: int) -> dict:
        return {name: dict(zip(("recon", "kl", "total"), (s / max(seen, 1)).tolist())) for name, s in sums.items()}

    def _progress(self, phase: str, epoch: int, step: int, steps_per_epoch: int, sums: dict,
                  seen: int = 0) -> Progress:
        # the means cost a host sync: refresh them every 10 steps and at phase changes only
        if sums and (phase != "train" or step % 10 == 0):
            self._last_losses = self._means(sums, seen)
        losses = getattr(self, "_last_losses", {})
        return Progress(phase=phase, epoch=epoch, epochs=self.config.epochs, step=step,
                        steps_per_epoch=steps_per_epoch, losses=losses,
                        images_per_s=self._clock.rate(), eta_s=self._clock.eta(step - self._start_step),
                        elapsed_s=self._clock.elapsed(), test={k: dict(v) for k, v in self.test.items()})

    def _save_all(self, epoch: int, stopped: bool, position: tuple | None = None) -> dict[str, Path]:
        """position: (batches done, noise generator, loss sums) of the epoch a stop interrupted.

        Every process calls this (the mid-epoch state is gathered from all of them); rank 0 alone
        writes, and the others wait at the barrier until the files are in place."""
        batches_done, noise_gen, sums = position or (0, None, {})
        world = self.dist.world_size
        shared = {}
        if batches_done:
            shared["noise_generator"] = noise_gen.get_state()
            if world > 1:  # one stream per process, in rank order; rank 0's also as "noise_generator"
                shared["noise_generators"] = torch.stack(gather_objects(self.dist, noise_gen.get_state()))
        extra = {"world_size": world} if world > 1 else {}
        saved = {}
        for name, model in self.models.items():
            if name not in self.out:
                continue
            state = shared | {"loss_sums": all_reduce_sum(self.dist, sums[name])} if batches_done else {}
            saved[name] = self.out[name]
            if not self.dist.is_main:
                continue
            ck = Checkpoint(model=model, dataset=self.data.describe(), metrics=self.test.get(name, {}),
                            history=self.history[name], train=asdict(self.config), epoch=epoch,
                            batches_done=batches_done, trainer_state=state,
                            optimizer_state=self.optimizers[name].state_dict() if self.save_optimizer else None,
                            extra={"stopped": stopped, "wall_s": round(self._clock.elapsed(), 1),
                                   "device": str(self.device), "backend": self.backends[name]} | extra)
            saved[name] = save_checkpoint(ck, self.out[name])
        self.dist.barrier()  # every process past the save before anyone reports it
        for cb in self.callbacks:
            cb.on_checkpoint(epoch, dict(saved))
        return saved


ORDER_STREAM, NOISE_STREAM = 100_003, 100_019  # odd multipliers: one per stream an epoch draws from


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of one epoch's stream (`ORDER_STREAM`: its shuffle, `NOISE_STREAM`: the VAE's noise).

    seed * stream + epoch, wrapped to the 64 bits `torch.Generator.manual_seed` takes (a seed
    above about 1.8e14 overflowed them). Wrapping changes no seed that fitted before, so runs
    and checkpoints from before the wrap resume as they were; and since `stream` is odd,
    multiplying by it is a bijection modulo 2**64: distinct seeds still get distinct streams."""
    return (seed * stream + epoch) % 2**64


def _rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps `seed` (so one process draws what it always drew); the others are spread
    across the 64-bit seed space by the golden-ratio increment of splitmix64."""
    return seed if rank == 0 else (seed + rank * 0x9E3779B97F4A7C15) % 2**64



class _Throughput:
    """Images/s over a sliding window and an ETA for the remaining steps."""

    def __init__(self, total_steps: int, window: int = 50):
        self.total = total_steps
        self.start = time.perf_counter()
        self.marks: list[tuple[float, int]] = [(self.start, 0)]
        self.window = window

    def tick(self, n: int) -> None:
        self.marks.append((time.perf_counter(), self.marks[-1][1] + n))
        if len(self.marks) > self.window:
            self.marks.pop(0)

    def rate(self) -> float:
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, steps_done: int) -> float:
        if steps_done <= 0:
            return float("nan")
        return self.elapsed() / steps_done * max(0, self.total - steps_done)


def make_pair(preset_name: str, image_shape, kinds=("ae", "vae"), latent_dim: int | None = None,
              beta: float | None = None, *, seed: int = 0) -> dict[str, Autoencoder]:
    """Fresh models of a preset for a data set's image shape, their initial weights drawn from `seed`.

    Each model is drawn from its own generator seeded with `seed` (the global generator is left
    as it was), so its weights do not depend on what ran before in the process, nor on whether
    it is trained alone or beside the other member of the pair."""
    from .presets import get_preset

    preset = get_preset(preset_name)
    bad = [k for k in kinds if k not in ("ae", "vae")]
    if bad or not kinds:
        raise ConfigError(f"models={list(kinds)!r} is invalid: expected 'ae', 'vae' or both")
    configs = {k: preset.config(k == "vae", image_shape=image_shape, latent_dim=latent_dim, beta=beta) for k in kinds}
    return {k: _seeded_model(cfg, seed) for k, cfg in configs.items()}


def _seeded_model(config, seed: int) -> Autoencoder:
    # nn.Module init draws from the global CPU generator, which every thread shares: the lock
    # keeps two jobs that build or seed at once from drawing from each other's stream
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Autoencoder(config)


if __name__ == "__main__":
    from .cli import train_main

    raise SystemExit(train_main())
