"""One epoch of the same MNIST VAE trained several ways, in one process, timed side by side.

(a) reference: the PyTorch example (pytorch/examples vae/main.py): a 784-400-20 VAE, BCE summed
    plus the closed-form KL, Adam lr 1e-3, batch 128, fed by a torchvision Dataset + DataLoader
    + ToTensor (one PIL image per sample), trained by a plain Python loop;
(b) ours: the same architecture built from `vae.models.ModelConfig` (Bernoulli likelihood)
    and trained by `vae.train.Trainer`, which draws batches by index from a resident uint8 tensor,
    once per step backend (vae/steps.py): "autograd", "compile" (torch.compile, the noise an
    input of the graph; skipped, with the reason, where torch.compile cannot run), "fused" (the
    hand-written gradient, vae/fused.py: what `auto` picks for this model), all float32, and
    "fused bf16" with bfloat16 matmuls (`TrainConfig(precision="bfloat16")`, mixed precision)
    where the CPU runs them natively.

steps/s is each side's steady rate: the epoch's steps but its first (where compile compiles)
and last (a smaller batch, compiled anew), over the time between them; "vs autograd" divides it
by the autograd side's rate of the same repeat.

All sides start from the same weights, see the same number of images, run on the same number
of threads, and are scored with the same test loss (-ELBO per image in nats, one posterior
sample, on the test split, in float32). Repeats rotate the order so a drifting machine load
biases no side; the table shows medians.

    .venv/bin/python bench/train_speed.py [--data ../shared/data/mnist.npz] [--repeats 3]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from vae.data import ImageDataset, load_dataset  # noqa: E402
from vae.device import has_fast_bfloat16  # noqa: E402
from vae.models import Autoencoder, ModelConfig  # noqa: E402
from vae.steps import compile_unavailable  # noqa: E402
from vae.train import Callback, TrainConfig, Trainer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
BATCH_SIZE, LR = 128, 1e-3


# --- data ------------------------------------------------------------------------------------
def load_mnist(path: Path, root: Path | None) -> tuple[ImageDataset, object, object, str]:
    """Our resident data set plus the reference's torchvision-style train/test Datasets."""
    from torchvision import datasets, transforms

    if root is not None:
        try:  # the real thing, if MNIST is already on disk (this machine has no network)
            ref = [datasets.MNIST(str(root), train=t, download=False, transform=transforms.ToTensor())
                   for t in (True, False)]
            return load_dataset("mnist", root, download=False, fallback=False), *ref, f"torchvision MNIST in {root}"
        except Exception as err:  # noqa: BLE001  (any failure: say so and use the arrays)
            note = f"no torchvision MNIST in {root} ({type(err).__name__}); "
    else:
        note = ""
    if path.is_file():
        data, note = load_dataset(str(path)), note + f"arrays from {path}"
    else:
        data = load_dataset("embedded-mnist")
        note += f"{path} not found: using the {len(data.train) + len(data.test):,} embedded MNIST digits"
    return data, ArrayMNIST(data, train=True), ArrayMNIST(data, train=False), note


class ArrayMNIST(torch.utils.data.Dataset):
    """torchvision.datasets.MNIST over in-memory arrays: a PIL image per sample, then ToTensor,
    so the reference pays exactly the per-image cost that the real `datasets.MNIST` pays."""

    def __init__(self, data: ImageDataset, train: bool):
        from torchvision import transforms

        split = data.train if train else data.test
        self.images, self.targets = split.images[:, 0].numpy(), split.labels.tolist()
        self.transform = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.targets[i]  # uint8 HxW -> mode "L"


# --- (a) the reference: pytorch/examples vae/main.py --------------------------------------------
class ExampleVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def example_loss(recon_x, x, mu, logvar):
    # Reconstruction + KL summed over all elements and the batch; KL from Kingma & Welling
    # (2014), Appendix B. The example's newer continuous-Bernoulli term is left out: our
    # Bernoulli likelihood leaves it out too, so both sides minimise the same objective.
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def reference_epoch(model: ExampleVAE, train_set, seed: int) -> float:
    """The example's `train(epoch)` minus its logging prints; returns seconds."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    model.train()
    train_loss = 0.0
    for data, _ in loader:
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = example_loss(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return time.perf_counter() - start


def reference_test(model: ExampleVAE, test_set, seed: int) -> tuple[float, float]:
    """The example's `test(epoch)`: mean loss per test image, and the seconds it took."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, _ in torch.utils.data.DataLoader(test_set, batch_size=BATCH_SIZE, shuffle=True):
            recon_batch, mu, logvar = model(data)
            test_loss += example_loss(recon_batch, data, mu, logvar).item()
    return test_loss / len(test_set), time.perf_counter() - start


# --- (b) ours ----------------------------------------------------------------------------------
def our_model_like(ref: ExampleVAE) -> Autoencoder:
    """The same 784-400-20 VAE from our config, starting from the reference's weights."""
    model = Autoencoder(ModelConfig(family="mlp", hidden=(400,), latent_dim=20, image_shape=(1, 28, 28),
                                    likelihood="bernoulli"))
    pairs = [(model.encoder[1], ref.fc1), (model.to_mean, ref.fc21), (model.to_logvar, ref.fc22),
             (model.decoder[0][0], ref.fc3), (model.decoder[0][2], ref.fc4)]
    with torch.no_grad():
        for ours, theirs in pairs:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
    return model


class _StepClock(Callback):
    """Notes when the first and the next-to-last step end, and when the test evaluation starts."""

    def __init__(self):
        self.first = self.before_last = self.train_end = None
        self.steady_steps = 0

    def on_step_end(self, progress):
        now = time.perf_counter()
        if progress.phase == "eval":
            self.train_end = self.train_end or now
        elif progress.step == 1:
            self.first = now
        elif progress.step == progress.steps_per_epoch - 1:
            self.before_last, self.steady_steps = now, progress.step - 1


def our_epoch(model: Autoencoder, data: ImageDataset, seed: int, threads: int, backend: str,
              precision: str) -> "Run":
    """One epoch through our Trainer with one step backend."""
    clock = _StepClock()
    config = TrainConfig(epochs=1, batch_size=BATCH_SIZE, lr=LR, seed=seed, num_threads=threads,
                         eval_batch_size=1000, device="cpu", precision=precision, backend=backend)
    start = time.perf_counter()
    result = Trainer({"vae": model}, data, config, callbacks=[clock]).fit()
    end = time.perf_counter()
    return Run(clock.train_end - start, result.history["vae"][0]["test"]["neg_elbo"], end - clock.train_end,
               steps_per_s=clock.steady_steps / (clock.before_last - clock.first), first_step_s=clock.first - start)


# --- the machine's matmul peak and our epoch's FLOPs ----------------------------------------
def matmul_peak_gflops(sizes=(1024, 2048), seconds: float = 0.5, trials: int = 3) -> float:
    """Best float32 GFLOP/s of an n x n torch.mm loop over a few n, on the current threads."""
    best = 0.0
    for n in sizes:
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=out)
        for _ in range(trials):
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                torch.mm(a, b, out=out)
                reps += 1
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def matmul_floor(model: nn.Module, images: int, trials: int = 5) -> tuple[float, float]:
    """(seconds, FLOPs) per epoch of one step's matmuls alone, timed in isolation (best of trials).

    Per Linear layer: the forward x W^T + b, the weight gradient g^T x and, except for the first
    layer (whose input needs no gradient), the input gradient g W. No dense float32 loop for
    this model, batch size and thread setting can beat this.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ops, flops = [], 0
    for layer in layers:
        x, g = torch.randn(BATCH_SIZE, layer.in_features), torch.randn(BATCH_SIZE, layer.out_features)
        w, b = layer.weight.detach(), layer.bias.detach()
        ops += [partial(F.linear, x, w, b), partial(torch.mm, g.t(), x)]
        flops += 2 * 2 * BATCH_SIZE * layer.in_features * layer.out_features
        if layer is not layers[0]:
            ops.append(partial(torch.mm, g, w))
            flops += 2 * BATCH_SIZE * layer.in_features * layer.out_features
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(20):
            for op in ops:
                op()
        best = min(best, (time.perf_counter() - start) / 20)
    steps = math.ceil(images / BATCH_SIZE)
    return best * steps, flops * steps


def epoch_flops(model: nn.Module, images: int) -> float:
    """Forward + backward ~ 3x the forward matmul FLOPs (2 * in * out per Linear per image)."""
    forward = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 3 * forward * images


# --- the comparison ----------------------------------------------------------------------------
@dataclass
class Run:
    train_s: float  # one training epoch, data loading included
    test_loss: float  # -ELBO per test image, nats
    eval_s: float
    steps_per_s: float = math.nan  # ours: the steady rate (first and last step left out)
    first_step_s: float = math.nan  # ours: from fit() to the end of the first step (compiling, for compile)


def run_reference(train_set, test_set, seed: int) -> Run:
    torch.manual_seed(seed)
    model = ExampleVAE()
    train_s = reference_epoch(model, train_set, seed)
    return Run(train_s, *reference_test(model, test_set, seed))


def run_ours(data: ImageDataset, seed: int, threads: int, side: str) -> Run:
    torch.manual_seed(seed)
    model = our_model_like(ExampleVAE())  # the reference's initial weights, same seed
    return our_epoch(model, data, seed, threads, *OURS[side])


# our sides: the Trainer with each step backend in float32, and the fused one with bfloat16
# matmuls (mixed precision): side -> (backend, precision)
OURS = {"autograd": ("autograd", "float32"), "compile": ("compile", "float32"), "fused": ("fused", "float32"),
        "fused bf16": ("fused", "bfloat16")}


def compare(args, data: ImageDataset, ref_train, ref_test) -> dict[str, list]:
    """Each repeat: every side's epoch (order rotating), then the machine's peak and matmul floor."""
    sides = ["reference", *args.ours]
    out: dict[str, list] = {side: [] for side in sides} | {"peak": [], "floor": [], "floor_flops": []}
    for r in range(args.repeats):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            if side == "reference":
                run = run_reference(ref_train, ref_test, args.seed)
            else:
                run = run_ours(data, args.seed, args.threads, side)
            out[side].append(run)
            rate = "" if math.isnan(run.steps_per_s) else f"  {run.steps_per_s:6.1f} steps/s"
            print(f"  repeat {r + 1}/{args.repeats} {side:10s} {run.train_s:6.2f} s/epoch{rate}  "
                  f"test {run.test_loss:.2f} nats", flush=True)
        out["peak"].append(matmul_peak_gflops())
        floor_s, floor_flops = matmul_floor(ExampleVAE(), len(data.train))
        out["floor"].append(floor_s)
        out["floor_flops"].append(floor_flops)
    return out


def print_table(res: dict[str, list], ours: list[str], flops: float, target: float) -> None:
    peak, floor = max(res["peak"]), statistics.median(res["floor"])
    sides = ["reference", *ours]
    med = {side: statistics.median(r.train_s for r in res[side]) for side in sides}
    print(f"\n{'':12s} {'s/epoch':>8s} {'(min..max)':>14s} {'steps/s':>8s} {'vs autograd':>11s} "
          f"{'1st step s':>10s} {'eval s':>7s} {'test -ELBO':>11s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for side in sides:
        times = [r.train_s for r in res[side]]
        rate = flops / med[side] / 1e9
        steps = statistics.median(r.steps_per_s for r in res[side])
        vs = _vs_autograd(res, side)
        print(f"{side:12s} {med[side]:8.2f} {f'({min(times):.2f}..{max(times):.2f})':>14s} "
              f"{_num(steps, 8, 1)} {_num(statistics.median(vs) if vs else math.nan, 11, 3)} "
              f"{_num(statistics.median(r.first_step_s for r in res[side]), 10, 2)} "
              f"{statistics.median(r.eval_s for r in res[side]):7.2f} {res[side][0].test_loss:11.2f} "
              f"{rate:8.1f} {rate / peak:8.1%}")
    rate = res["floor_flops"][0] / floor / 1e9  # its own FLOPs: no input gradient for the first layer
    print(f"{'matmuls only':12s} {floor:8.2f} {'':>14s} {'':>8s} {'':>11s} {'':>10s} {'':>7s} {'':>11s} "
          f"{rate:8.1f} {rate / peak:8.1%}")
    print("(of peak: against the float32 peak, also for bf16, whose matmuls can beat it; vs autograd: "
          "steps/s over the autograd side's in the same repeat, median)\n")
    for side in ours:
        if side != "autograd" and _vs_autograd(res, side):
            print(f"{side} / autograd steps/s: per repeat {', '.join(f'{x:.3f}' for x in _vs_autograd(res, side))}")
    ref_loss = res["reference"][0].test_loss
    for side in ours:
        ratios = [o.train_s / r.train_s for o, r in zip(res[side], res["reference"])]
        ratio = med[side] / med["reference"]
        loss = res[side][0].test_loss
        same_loss = abs(loss / ref_loss - 1) <= 0.01
        verdict = "met" if ratio <= target and same_loss else "NOT met"
        print(f"{side} ({'/'.join(OURS[side])}) / reference time: {ratio:.3f} (ratio of medians; per repeat "
              f"{', '.join(f'{x:.3f}' for x in ratios)}); test loss {loss - ref_loss:+.2f} nats "
              f"({loss / ref_loss - 1:+.2%}, within 1%: {'yes' if same_loss else 'NO'}); "
              f"target <= {target:.2f} at the same loss: {verdict}")
    floors = [f / r.train_s for f, r in zip(res["floor"], res["reference"])]
    print(f"matmuls only / reference: {floor / med['reference']:.3f} (per repeat "
          f"{', '.join(f'{x:.3f}' for x in floors)}): the float32 floor for any loop at this thread count")


def _vs_autograd(res: dict[str, list], side: str) -> list[float]:
    """Per repeat: the side's steady steps/s over the autograd side's (empty without autograd)."""
    return [o.steps_per_s / a.steps_per_s for o, a in zip(res[side], res.get("autograd", []))]


def _num(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}s}" if math.isnan(value) else f"{value:{width}.{digits}f}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MNIST .npz (default: %(default)s)")
    p.add_argument("--root", type=Path, default=None,
                   help="a torchvision MNIST root to use instead of --data, if MNIST is there")
    p.add_argument("--repeats", type=int, default=3, help="epochs per side; the table shows medians")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for every side (0: torch's default, one per core); on a machine "
                        "busy with other work use 1 (see bench/README.md)")
    p.add_argument("--sides", default=",".join(OURS),
                   help="which of our sides to run, comma-separated, from " + ", ".join(OURS) + " (default: all; "
                        "compile only where torch.compile can run, fused bf16 only where the CPU has native "
                        "bfloat16; see bench/README.md)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--target", type=float, default=0.3, help="the ours/reference time ratio to meet")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.ours = [side for side in args.sides.split(",") if side]
    unknown = [side for side in args.ours if side not in OURS]
    if unknown:
        raise SystemExit(f"unknown side(s) {unknown}: expected some of {list(OURS)}")
    if "fused bf16" in args.ours and not has_fast_bfloat16("cpu"):
        print("note: this CPU has no native bfloat16 (AVX512-BF16 or AMX): skipping 'fused bf16'")
        args.ours.remove("fused bf16")
    if "compile" in args.ours and compile_unavailable("cpu"):
        print(f"note: skipping 'compile': {compile_unavailable('cpu')}")
        args.ours.remove("compile")
    data, ref_train, ref_test, note = load_mnist(args.data, args.root)
    print(f"data: {note} ({len(data.train):,} train, {len(data.test):,} test images)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {BATCH_SIZE}, "
          f"Adam lr {LR}, seed {args.seed}, {args.repeats} repeat(s)\n")
    res = compare(args, data, ref_train, ref_test)
    flops = epoch_flops(ExampleVAE(), len(data.train))
    print(f"\nfloat32 matmul peak: {max(res['peak']):.1f} GFLOP/s (best n x n torch.mm loop, n = 1024, 2048; "
          f"per repeat {', '.join(f'{p:.0f}' for p in res['peak'])})")
    print(f"epoch FLOPs: {flops / 1e9:.1f} GFLOP (3 x forward Linear FLOPs x {len(data.train):,} images); "
          f"GFLOP/s below = that / s per epoch")
    print_table(res, args.ours, flops, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
