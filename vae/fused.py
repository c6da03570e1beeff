"""The training loss of an MLP autoencoder with a Bernoulli decoder, its gradient written out.

`Autoencoder.loss` builds about 40 autograd nodes per step for a two-layer MLP VAE; on a CPU
the engine's bookkeeping and the elementwise passes between them cost about as much as the
matrix products (bench/README.md). Here the forward pass and its gradient are written by hand:

- the Bernoulli NLL's gradient with respect to the logits is sigmoid(l) - x, computed in the
  forward pass from the same sigmoid that gives the loss value;
- the reparameterisation and the closed-form KL have two-line gradients;
- each Linear layer's backward is two matmuls (weight gradient, input gradient) and a sum;
- the VAE's mean and log-variance heads run as one Linear (their weights stacked).

`FusedLoss(model)` offers it two ways: called, it returns the terms as one autograd node (so
it composes like `model.loss`); `step_gradients` returns the terms and sets every parameter's
`.grad` to the gradient of the batch mean of `total` directly, without the autograd engine:
what the trainer's step needs. Both compute exactly the terms of `Autoencoder.loss` (same
formulae, same noise from the same generator; tests/test_fused.py checks values and gradients
against autograd) for the models `supports` accepts: the `mlp` family (Linear + ReLU stacks),
Bernoulli likelihood, closed-form KL. The trainer uses `Autoencoder.loss` for the others.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError
from . import losses
from .losses import LossTerms
from .models import LOGVAR_RANGE, Autoencoder

# A Linear layer's matmuls run in the low precision only when its weight has at least this many
# entries: for small ones a bfloat16 product is no faster than float32 and the casts are not free
# (bench/README.md, "Figures behind the code", has the timings).
LOW_PRECISION_MIN_WEIGHTS = 65_536


def supports(model: Autoencoder) -> bool:
    cfg = model.config
    return (cfg.family == "mlp" and cfg.likelihood == "bernoulli"
            and (not cfg.variational or cfg.kl_estimator == "closed-form"))


class FusedLoss:
    """The loss of one model, its layers looked up once.

    matmul_dtype=torch.bfloat16 runs the large layers' matrix products on bfloat16 copies of
    their operands (float32 accumulation inside the kernel): mixed precision, as torch.autocast
    does it. Weights, gradients, the loss and everything elementwise stay float32.
    """

    def __init__(self, model: Autoencoder, matmul_dtype: torch.dtype | None = None):
        if not supports(model):
            raise ConfigError(f"FusedLoss does not implement {model.config.family}/{model.config.likelihood} models")
        enc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
        dec = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
        heads = [model.to_mean] + ([model.to_logvar] if model.variational else [])
        self.model, self.matmul_dtype = model, matmul_dtype
        self.params = [p for layer in enc + heads + dec for p in (layer.weight, layer.bias)]
        self.n_enc, self.n_dec = len(enc), len(dec)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> LossTerms:
        """Per-image terms equal to `model.loss(x, generator)`, differentiable (one autograd node)."""
        x = x.flatten(1)
        recon, kl, total = _MLPLoss.apply(x, self._noise(x, generator), self, *self.params)
        return LossTerms(recon=recon, kl=kl, total=total)

    @torch.no_grad()
    def step_gradients(self, x: torch.Tensor, generator: torch.Generator | None = None) -> LossTerms:
        """The terms, with each parameter's `.grad` set to the gradient of `total.mean()`: what
        `zero_grad(set_to_none=True)` then `model.loss(x).total.mean().backward()` leave."""
        x = x.flatten(1)
        terms, saved = _forward(x, self._noise(x, generator), self)
        share = 1.0 / x.shape[0]  # d mean / d total_i
        beta = float(self.model.config.beta)
        for p, g in zip(self.params, _backward(saved, share, beta * share if saved.vae else None)):
            p.grad = g
        return terms

    def _noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        return self.model.draw_noise(x.shape[0], generator, device=x.device, dtype=x.dtype)


def bernoulli_nll_and_grad(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row -log p(x|l) = sum softplus(l) - l x, and its gradient sigmoid(l) - x, from one sigmoid.

    softplus(l) = relu(l) - log max(s, 1 - s) with s = sigmoid(l), which never takes the log
    of 0. The log is taken of products of 16 (or fewer) factors in [1/2, 1]: no underflow (the
    product is >= 2^-16), 1/16 of the logs, and log is the slowest elementwise op of torch's CPU
    builds (bench/README.md, "Figures behind the code").
    """
    s = torch.sigmoid(logits)
    rows, width = logits.shape
    chunk = next(c for c in (16, 8, 4, 2, 1) if width % c == 0)
    log_max = torch.maximum(s, 1 - s).view(rows, -1, chunk).prod(-1).log_().sum(1)
    nll = torch.addcmul(logits.clamp_min(0), logits, x, value=-1).sum(1).sub_(log_max)
    return nll, s.sub_(x)


@dataclass
class _Saved:
    """What the backward pass needs from the forward pass."""

    grad_logits: torch.Tensor  # sigmoid(logits) - x, scaled in place by the backward pass
    acts: list[torch.Tensor]  # acts[i]: the input of layer i (encoder, heads, decoder), in its dtype
    weights: list[torch.Tensor]  # in the dtype each layer's matmuls ran in; the heads stacked
    n_enc: int
    vae: bool
    eps: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    logvar_free: torch.Tensor | None = None  # where the log-variance was inside LOGVAR_RANGE (not clamped)


def _forward(x: torch.Tensor, eps: torch.Tensor | None, loss: FusedLoss) -> tuple[LossTerms, _Saved]:
    n_enc, n_dec, params = loss.n_enc, loss.n_dec, loss.params
    weights, biases = list(params[0::2]), list(params[1::2])
    if eps is not None:  # mean and log-variance heads -> one Linear
        weights[n_enc:n_enc + 2] = [torch.cat(weights[n_enc:n_enc + 2])]
        biases[n_enc:n_enc + 2] = [torch.cat(biases[n_enc:n_enc + 2])]
    low = loss.matmul_dtype or x.dtype
    weights = [w.to(low) if w.numel() >= LOW_PRECISION_MIN_WEIGHTS else w for w in weights]
    layers = [(w, b.to(w.dtype)) for w, b in zip(weights, biases)]

    def linear(i: int) -> torch.Tensor:
        """Layer i on acts[i], which it keeps in its own dtype for the weight gradient."""
        w, b = layers[i]
        acts[i] = acts[i].to(w.dtype)
        return torch.addmm(b, acts[i], w.t())

    acts = [x]
    for i in range(n_enc):
        acts.append(linear(i).relu_())
    head = linear(n_enc).float()
    saved = _Saved(None, acts, weights, n_enc, vae=eps is not None)
    if eps is None:  # AE: z is the mean, no KL
        z, kl = head, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        mean, raw_logvar = head.chunk(2, dim=1)
        logvar = raw_logvar.clamp(*LOGVAR_RANGE)  # as Posterior does
        std = torch.exp(0.5 * logvar)
        z = losses.reparameterize(mean, std, eps)
        kl = losses.kl_closed_form(mean, logvar)
        saved.eps, saved.mean, saved.std = eps, mean, std
        saved.logvar_free = logvar == raw_logvar
    acts.append(z)
    for i in range(n_enc + 1, n_enc + n_dec):
        acts.append(linear(i).relu_())
    logits = linear(n_enc + n_dec).float()
    recon, saved.grad_logits = bernoulli_nll_and_grad(logits, x)
    beta = float(loss.model.config.beta)
    total = recon if eps is None else recon + beta * kl
    return LossTerms(recon=recon, kl=kl, total=total), saved


def _backward(s: _Saved, w_recon, w_kl) -> list[torch.Tensor]:
    """Gradients (float32, in `FusedLoss.params` order) of sum_i w_recon_i recon_i + w_kl_i kl_i;
    each weight is a number or a [B, 1] tensor."""
    grads: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weight, bias) per layer, last first

    def linear_back(g: torch.Tensor, i: int, input_grad: bool = True) -> torch.Tensor | None:
        """Appends layer i's gradients (g: its output's gradient); returns its input's gradient."""
        w = s.weights[i]
        g = g.to(w.dtype)
        grads.append((g.t().mm(s.acts[i]).float(), g.sum(0, dtype=torch.float32)))
        return g.mm(w) if input_grad else None

    g = s.grad_logits.mul_(w_recon)
    for i in range(len(s.weights) - 1, s.n_enc, -1):  # decoder, from the output back to z
        g = linear_back(g, i)
        if i > s.n_enc + 1:
            g = g.mul_(s.acts[i] > 0)  # ReLU: acts[i] is the previous layer's output after its ReLU
    g = g.float()  # dL/dz
    if s.vae:  # z = mean + std * eps, std = exp(logvar / 2); KL as in _forward
        g_mean, g_logvar = g, g * s.eps * s.std * 0.5
        if w_kl is not None:
            g_mean = g_mean + s.mean * w_kl
            g_logvar += (s.std * s.std - 1).mul_(w_kl * 0.5)
        g_logvar = g_logvar.mul_(s.logvar_free)  # the clamp passes no gradient where it bites
        g = torch.cat([g_mean, g_logvar], dim=1)
    g = linear_back(g, s.n_enc)
    for i in range(s.n_enc - 1, -1, -1):  # encoder; x needs no gradient
        g = linear_back(g.mul_(s.acts[i + 1] > 0), i, input_grad=i > 0)
    out: list[torch.Tensor] = []
    for i, (gw, gb) in enumerate(reversed(grads)):
        if i == s.n_enc and s.vae:  # the stacked heads: mean's rows, then log-variance's
            out += [gw[:len(gw) // 2], gb[:len(gb) // 2], gw[len(gw) // 2:], gb[len(gb) // 2:]]
        else:
            out += [gw, gb]
    return out


class _MLPLoss(torch.autograd.Function):
    """`_forward`/`_backward` as one autograd node: inputs x, eps (None for an AE), the
    FusedLoss, then its parameters; outputs recon, kl, total per image."""

    @staticmethod
    def forward(ctx, x, eps, loss, *params):
        ctx.set_materialize_grads(False)  # the usual .total.mean().backward() leaves recon/kl None
        terms, ctx.saved = _forward(x, eps, loss)  # intermediates only: no reference cycle
        ctx.beta = float(loss.model.config.beta)
        return terms.recon, terms.kl, terms.total

    @staticmethod
    def backward(ctx, g_recon, g_kl, g_total):
        if ctx.saved is None:  # _backward scaled the saved tensors in place
            raise RuntimeError("a FusedLoss graph can be backpropagated once (retain_graph is not supported)")
        w_recon = _add(g_recon, g_total)  # d(output)/d(recon_i)
        w_kl = _add(g_kl, None if g_total is None else ctx.beta * g_total) if ctx.saved.vae else None
        w_recon = torch.zeros_like(ctx.saved.grad_logits[:, :1]) if w_recon is None else w_recon.unsqueeze(1)
        grads = _backward(ctx.saved, w_recon, None if w_kl is None else w_kl.unsqueeze(1))
        ctx.saved = None  # free the activations now, not when the graph goes
        return (None, None, None, *grads)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b
