"""`python -m vae.train`: train an AE/VAE pair of a preset, with a progress bar and a summary.

Under `torchrun --nproc_per_node=N -m vae.train ...` the same command trains with N processes
(DistributedDataParallel; --batch-size stays the batch of all of them together); rank 0 alone
prints and writes the checkpoints."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .checkpoint import load_checkpoint
from .data import load_dataset
from .device import has_fast_bfloat16
from .distributed import init_from_env, one_disk_at_a_time, shutdown
from .errors import ConfigError, run_cli
from .presets import DEFAULT_PRESETS, PRESETS, default_preset, get_preset
from .sweep import sweep_models
from .steps import BACKENDS
from .train import PRECISIONS, Callback, TrainConfig, Trainer, make_pair


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae.train", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="model pair to train (default: the first that fits the images of --data among "
                        + "; ".join(f"{', '.join(names)} for {'grey' if c == 1 else 'colour'}"
                                    for c, names in DEFAULT_PRESETS.items()) + ")")
    p.add_argument("--data", "--dataset", dest="data", default=None,
                   help="mnist, fashion-mnist, cifar10, embedded-mnist, a .npz file or an image folder "
                        "(default: the preset's data set)")
    p.add_argument("--models", default="both", choices=["both", "ae", "vae"], help="which members of the pair")
    p.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step; under torchrun, of all processes together (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: the preset's)")
    p.add_argument("--latent-dim", type=int, default=None, help="size of the code (default: the preset's)")
    p.add_argument("--beta", type=_betas, default=None,
                   help="KL weight of the VAE (default: the preset's, 1); a comma-separated list (e.g. 0,0.1,1,4) "
                        "trains a beta sweep instead: one model per value (0: the AE) on the same batches, "
                        "written as PREFIX-beta-<value>.safetensors")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights, the batch order and the "
                                                       "VAE's noise")
    p.add_argument("--out", default=None, help="checkpoint prefix: writes PREFIX-ae.safetensors and "
                                               "PREFIX-vae.safetensors (default: checkpoints/<preset>)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save every N epochs")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints at --out")
    p.add_argument("--weights-only", action="store_true", help="save without the optimizer state (a third "
                                                               "of the size; what ships; cannot be resumed)")
    p.add_argument("--float16", action="store_true", help="with --weights-only: store the weights as float16 "
                   "(half the size) if the test figures move by less than 0.5%% (0.005 nats below 1 nat); else keep float32 "
                   "and say so")
    p.add_argument("--limit-train", type=int, default=None, help="use a random subset of the training split")
    p.add_argument("--limit-test", type=int, default=None, help="use a random subset of the test split")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 leaves torch's own choice")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--precision", default="float32", choices=list(PRECISIONS),
                   help="bfloat16: mixed precision, about 2x faster matmuls on CPUs with AVX512-BF16 or "
                        "AMX and on recent GPUs (much slower elsewhere); weights and evaluation stay float32")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="how a step computes its gradients: autograd (every model; the shipped MNIST "
                        "checkpoints' exact arithmetic), compile (torch.compile; needs a C++ compiler, one "
                        "process), fused (the hand-written gradient of MLP models with a Bernoulli decoder, "
                        "vae/fused.py), auto (fused where it applies, else autograd)")
    p.add_argument("--autograd", dest="backend", action="store_const", const="autograd",
                   help="the same as --backend autograd")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of using the embedded MNIST "
                                                               "digits when a download fails")
    return p


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where X tells the reader something: not None (the help says
    what stands in for it) and not an on/off flag's False."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


class _ProgressBar(Callback):
    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None

    def on_step_end(self, p):
        if self.bar is None:
            self.bar = self._tqdm(total=p.total_steps, initial=max(0, p.step - 1), unit="step",
                                  dynamic_ncols=True, mininterval=0.5)
        self.bar.update(p.step - self.bar.n)
        if p.losses and p.step % 10 == 0:
            losses = {k: f"{v['total']:.1f}" for k, v in p.losses.items()}
            self.bar.set_postfix(losses | {"img/s": f"{p.images_per_s:.0f}"}, refresh=False)
        self.bar.set_description(f"epoch {p.epoch}/{p.epochs}" + (" eval" if p.phase == "eval" else ""),
                                 refresh=False)

    def on_epoch_end(self, p, models):
        parts = [f"{name}: " + _fmt_metrics(m) for name, m in p.test.items()]
        (self.bar.write if self.bar else print)(f"epoch {p.epoch}/{p.epochs}  test  " + "  |  ".join(parts))

    def on_train_end(self, p):
        if self.bar is not None:
            self.bar.close()


def _fmt_metrics(m: dict) -> str:
    keys = [("recon", "recon"), ("kl", "KL"), ("neg_elbo", "-ELBO"), ("bits_per_dim", "bits/dim")]
    return " ".join(f"{label} {m[k]:.3f}" if k == "bits_per_dim" else f"{label} {m[k]:.2f}"
                    for k, label in keys if k in m)


def train_main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    if args.preset is None and args.data is None:
        raise ConfigError("give --preset, --data or both (--data alone picks a preset that fits its images)")
    group, device = init_from_env(args.device)  # one process, or one of torchrun's
    try:
        return _train(args, group, device)
    finally:
        shutdown(group)


def _train(args, group, device) -> int:
    main = group.is_main
    # every process holds the whole data set; the first on each disk downloads and caches it
    data = one_disk_at_a_time(group, lambda: _load_data(args, args.data or get_preset(args.preset).default_dataset,
                                                        quiet=not main))
    name = args.preset or _chosen_preset(data, quiet=not main)
    preset = get_preset(name)
    config = TrainConfig(epochs=_default(args.epochs, preset.epochs), batch_size=_default(args.batch_size, preset.batch_size),
                         lr=args.lr if args.lr is not None else preset.lr, seed=args.seed,
                         checkpoint_every=args.checkpoint_every, num_threads=args.threads,
                         device=str(device) if group.enabled else args.device,
                         precision=args.precision, backend=args.backend)
    prefix = args.out or f"checkpoints/{name}"
    kinds = ("ae", "vae") if args.models == "both" else (args.models,)
    if args.beta is not None and len(args.beta) > 1:
        models = sweep_models(name, data.image_shape, args.beta, latent_dim=args.latent_dim, seed=args.seed)
        kinds = tuple(models)
    else:
        models = make_pair(name, data.image_shape, kinds, latent_dim=args.latent_dim,
                           beta=args.beta[0] if args.beta else None, seed=args.seed)
    out = {k: Path(f"{prefix}-{k}.safetensors") for k in kinds}
    resume = {k: load_checkpoint(p) for k, p in out.items()} if args.resume else None
    if main and config.precision == "bfloat16" and not has_fast_bfloat16(device):
        print("note: this device has no native bfloat16 matmuls that we know of: --precision bfloat16 "
              "may be slower than float32 here", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: stop cleanly, keep a checkpoint
    if group.enabled:  # torchrun passes on the signal it gets: SIGINT from Ctrl-C, SIGTERM from a scheduler
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    trainer = Trainer(models, data, config, callbacks=[_ProgressBar()] if main else [], stop_event=stop, out=out,
                      resume=resume, save_optimizer=not args.weights_only, distributed=group)
    if main:
        where = f"{group.world_size} processes ({group.backend}, {device.type})" if group.enabled else trainer.device
        print(f"training {', '.join(kinds)} of {name} on {data.name} ({len(data.train):,} train / "
              f"{len(data.test):,} test images) on {where}, {config.epochs} epochs")
    result = trainer.fit()
    if main:  # the others' copies are rank 0's: nothing more for them to say or write
        _summary(result, data)
        if args.float16 and not result.stopped:
            _store_half(result, data, config)
    return 130 if result.stopped else 0


def _betas(text: str) -> list[float]:
    """'1' or '0,0.1,1,4' -> the KL weights, each a finite number >= 0, no repeats."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list of numbers")
    if not values or any(not (0 <= v < float("inf")) for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct numbers >= 0")
    return values


def _load_data(args, source: str, quiet: bool = False):
    data = load_dataset(source, fallback=not args.no_fallback)
    for note in data.notes if not quiet else ():
        print(f"note: {note}", file=sys.stderr)
    if args.limit_train or args.limit_test:
        data = data.limit(args.limit_train, args.limit_test, seed=args.seed)
    return data


def _chosen_preset(data, quiet: bool = False) -> str:
    name = default_preset(data.image_shape)
    c, h, w = data.image_shape
    if not quiet:
        print(f"note: no --preset given: training --preset {name}, which fits {data.name}'s {h}x{w} "
              f"{'grey' if c == 1 else 'colour'} images (--help lists the others)", file=sys.stderr)
    return name


def _summary(result, data) -> None:
    state = "stopped early" if result.stopped else "done"
    print(f"\n{state} after {result.progress.step} steps in {result.wall_s:.1f} s "
          f"({data.name}, test split of {len(data.test):,} images; figures per image, nats)")
    for name, path in result.checkpoints.items():
        metrics = result.progress.test.get(name, {})
        print(f"  {name:4s} {_fmt_metrics(metrics) or '(not evaluated)'}  -> {path}")


def _store_half(result, data, config) -> None:
    """float16 storage, kept only where every test figure moves by less than 0.5%."""
    from .checkpoint import save_checkpoint, store_half
    from .metrics import likelihood_metrics

    print("\nfloat16 storage (test figures before -> after; kept if every one moves by < 0.5%):")
    for name, path in result.checkpoints.items():
        before = result.progress.test.get(name, {})
        original = load_checkpoint(path)
        store_half(path)
        after = likelihood_metrics(load_checkpoint(path).model, data.test, seed=config.seed)
        moved = max(abs(after[k] - v) / max(abs(v), 1.0) for k, v in before.items() if k in after and v)
        kept = moved < 0.005
        if not kept:
            save_checkpoint(original, path)  # float32 again, atomically
        print(f"  {name:10s} " + " ".join(f"{k} {v:.2f}->{after[k]:.2f}" for k, v in before.items() if k in after)
              + f"  (largest change {moved:.3%}: " + ("float16" if kept else "kept float32") + ")")


def _default(value, fallback):
    return fallback if value is None else value
