"""One training step (loss, gradients, optimizer update) of one model, by one of three backends.

- `autograd`: `Autoencoder.loss` and `.backward()`, the arithmetic the shipped checkpoints
  were trained with; every model.
- `compile`: the same loss through `torch.compile`. The VAE's noise is drawn outside and passed
  in, so the compiled graph is a pure function of the batch, the noise and the weights (a
  generator inside it would break the graph); the noise is the very eps autograd draws from
  the same generator state. Needs a C++ compiler on a CPU (Triton on a GPU); one process only.
- `fused`: the loss with its gradient written out, no autograd graph (vae/fused.py); MLP models
  with a Bernoulli decoder and the closed-form KL only.

`auto` (the default) is the fastest measured backend that the model supports: `fused` where it
can, else `autograd` (bench/train_speed.py measures all three; `compile` is not faster here and
would make every run wait for a compiler that the Space's image does not have).
"""
from __future__ import annotations

import shutil
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import fused
from .distributed import SINGLE, Distributed, average_gradients, broadcast_module
from .errors import ConfigError
from .losses import LossTerms
from .models import Autoencoder

BACKENDS = ("auto", "autograd", "compile", "fused")


def resolve_backend(model: Autoencoder, backend: str = "auto", distributed: Distributed = SINGLE) -> str:
    """The backend that will train `model`: `auto` made concrete, or a clear ConfigError."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is invalid: expected one of {BACKENDS}")
    if backend == "auto":
        return "fused" if fused.supports(model) else "autograd"
    cfg = model.config
    if backend == "fused" and not fused.supports(model):
        raise ConfigError(f"backend 'fused' implements MLP models with a Bernoulli decoder and the closed-form KL, "
                          f"not {cfg.family}/{cfg.likelihood}/{cfg.kl_estimator}: use 'autograd' or 'auto'")
    if backend == "compile" and distributed.enabled:
        raise ConfigError("backend 'compile' trains in one process only: under torchrun use 'autograd' or 'fused'")
    return backend


def compile_unavailable(device: torch.device | str = "cpu") -> str | None:
    """Why torch.compile cannot build a step on `device` here, or None when it can (as far as
    can be told without compiling: the compiler it needs is there)."""
    if torch.device(device).type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile on a GPU needs Triton, which is not installed"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception as err:  # noqa: BLE001  (inductor says why in its own exception types)
        return f"torch.compile on a CPU needs a C++ compiler: {err}"
    return None if shutil.which(compiler) else f"torch.compile on a CPU needs a C++ compiler ({compiler} not found)"


class Step:
    """`step(x, generator)`: one optimizer update on the batch x (model inputs, not uint8
    images); returns the per-image loss terms. Subclasses set the gradients."""

    backend = ""

    def __init__(self, model: Autoencoder, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> LossTerms:
        terms = self.gradients(x, generator)
        self.optimizer.step()
        return terms

    def gradients(self, x: torch.Tensor, generator: torch.Generator | None) -> LossTerms:
        raise NotImplementedError


class AutogradStep(Step):
    """`model.loss`, then backward; under torchrun inside DistributedDataParallel."""

    backend = "autograd"

    def __init__(self, model, optimizer, low_precision: bool = False, distributed: Distributed = SINGLE):
        super().__init__(model, optimizer)
        loss = _LossOf(model, _autocast(model.loss, low_precision))
        # DDP synchronises what runs inside a module's forward: the loss, not the model's forward
        self.loss = DistributedDataParallel(loss) if distributed.enabled else loss

    def gradients(self, x, generator):
        terms = self.loss(x, generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.mean().backward()
        return terms


class CompiledStep(Step):
    """`model.loss` compiled, the noise an input of the graph."""

    backend = "compile"

    def __init__(self, model, optimizer, low_precision: bool = False):
        super().__init__(model, optimizer)
        loss = _autocast(lambda x, noise: model.loss(x, noise=noise), low_precision)

        def terms(x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
            t = loss(x, noise)
            return t.recon, t.kl, t.total

        # static shapes: an epoch has two (the full batch and the last one), each compiled once
        self.loss = torch.compile(terms, dynamic=False)

    def gradients(self, x, generator):
        noise = self.model.draw_noise(x.shape[0], generator, device=x.device, dtype=x.dtype)
        terms = LossTerms(*self.loss(x, noise))
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.mean().backward()
        return terms


class FusedStep(Step):
    """The hand-written gradient of vae/fused.py; under torchrun, averaged by one all-reduce
    (DDP would never see these gradients: they do not pass through autograd)."""

    backend = "fused"

    def __init__(self, model, optimizer, low_precision: bool = False, distributed: Distributed = SINGLE):
        super().__init__(model, optimizer)
        self.loss = fused.FusedLoss(model, matmul_dtype=torch.bfloat16 if low_precision else None)
        self.distributed = distributed
        broadcast_module(distributed, model)  # every process starts from rank 0's weights, as DDP does

    def gradients(self, x, generator):
        terms = self.loss.step_gradients(x, generator=generator)
        average_gradients(self.distributed, self.loss.params)  # no-op for one process
        return terms


def make_step(model: Autoencoder, optimizer: torch.optim.Optimizer, backend: str = "auto", *,
              precision: str = "float32", distributed: Distributed = SINGLE) -> Step:
    """The step of `backend` for `model` (ConfigError if the backend cannot train it here).
    precision="bfloat16": mixed precision (bfloat16 matmuls; weights and loss in float32)."""
    backend = resolve_backend(model, backend, distributed)
    low = precision == "bfloat16"
    if backend == "fused":
        return FusedStep(model, optimizer, low, distributed)
    if backend == "compile":
        device = next(model.parameters()).device
        reason = compile_unavailable(device)
        if reason:
            raise ConfigError(f"backend 'compile' is not available here: {reason}; use 'autograd' or 'auto'")
        return CompiledStep(model, optimizer, low)
    return AutogradStep(model, optimizer, low, distributed)


def _autocast(loss_fn: Callable[..., LossTerms], low_precision: bool) -> Callable[..., LossTerms]:
    """loss_fn, or loss_fn under bfloat16 autocast with its terms back in float32."""
    if not low_precision:
        return loss_fn

    def autocast_loss(x, *args):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            terms = loss_fn(x, *args)
        return LossTerms(*(t.float() for t in (terms.recon, terms.kl, terms.total)))

    return autocast_loss


class _LossOf(nn.Module):
    """A model's loss as a module's forward (what DistributedDataParallel wraps)."""

    def __init__(self, model: Autoencoder, loss_fn: Callable[..., LossTerms]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> LossTerms:
        return self.loss_fn(x, generator)
