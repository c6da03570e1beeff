"""The training loss of an MLP autoencoder with a Bernoulli decoder as one autograd node.

`Autoencoder.loss` builds about 40 autograd nodes per step for a two-layer MLP VAE; on a CPU
the engine's bookkeeping and the elementwise passes between them cost about as much as the
matrix products beyond the matmuls themselves (bench/README.md). Here the forward pass and
its gradient are written out by hand in one `torch.autograd.Function`:

- the Bernoulli NLL's gradient with respect to the logits is sigmoid(l) - x, computed in the
  forward pass from the same sigmoid that gives the loss value;
- the reparameterisation and the closed-form KL have two-line gradients;
- each Linear layer's backward is two matmuls (weight gradient, input gradient) and a sum.

It computes exactly the terms of `Autoencoder.loss` (same formulae, same noise from the same
generator; tests/test_fused.py checks values and gradients against autograd) for the models
`supports` accepts: the `mlp` family (Linear + ReLU stacks), Bernoulli likelihood, closed-form
KL. The trainer uses it for those and `Autoencoder.loss` for everything else.
"""
from __future__ import annotations

import torch
from torch import nn

from .losses import LossTerms
from .models import Autoencoder


def supports(model: Autoencoder) -> bool:
    cfg = model.config
    return (cfg.family == "mlp" and cfg.likelihood == "bernoulli"
            and (not cfg.variational or cfg.kl_estimator == "closed-form"))


def loss(model: Autoencoder, x: torch.Tensor, generator: torch.Generator | None = None,
         matmul_dtype: torch.dtype | None = None) -> LossTerms:
    """Per-image loss terms, equal to `model.loss(x, generator)`; x is [B, C, H, W] in [0, 1].

    matmul_dtype=torch.bfloat16 runs the matrix products on bfloat16 copies of their operands
    (float32 accumulation inside the kernel): mixed precision, as torch.autocast would do it.
    Weights, their gradients, the loss and everything elementwise stay float32.
    """
    enc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    dec = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    heads = [model.to_mean] + ([model.to_logvar] if model.variational else [])
    params = [p for layer in enc + heads + dec for p in (layer.weight, layer.bias)]
    x = x.flatten(1)
    eps = None
    if model.variational:  # drawn exactly as Posterior.sample draws it
        eps = torch.randn((x.shape[0], model.config.latent_dim), generator=generator, device=x.device,
                          dtype=x.dtype)
    recon, kl, total = _MLPLoss.apply(x, eps, float(model.config.beta), len(enc), len(dec),
                                      matmul_dtype or x.dtype, *params)
    return LossTerms(recon=recon, kl=kl, total=total)


def bernoulli_nll_and_grad(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row -log p(x|l) = sum softplus(l) - l x, and its gradient sigmoid(l) - x, from one sigmoid.

    softplus(l) = relu(l) - log max(s, 1 - s) with s = sigmoid(l), which never takes the log
    of 0. The log is taken of products of 16 (or fewer) factors in [1/2, 1]: no underflow (the
    product is >= 2^-16), 1/16 of the logs, and log is the slowest elementwise op on this CPU
    build (about 3x a sigmoid).
    """
    s = torch.sigmoid(logits)
    rows, width = logits.shape
    chunk = next(c for c in (16, 8, 4, 2, 1) if width % c == 0)
    log_max = torch.maximum(s, 1 - s).view(rows, -1, chunk).prod(-1).log_().sum(1)
    nll = torch.addcmul(logits.clamp_min(0), logits, x, value=-1).sum(1).sub_(log_max)
    return nll, s.sub_(x)


# A Linear layer's matmuls run in the low precision only when its weight has at least this many
# entries: for small ones a bfloat16 product is no faster than float32 and the casts are not free
# (784x400: 215 vs 515 us; 20x400: 40 vs 22 us on the 2-core Zen 4 CPU of bench/README.md).
LOW_PRECISION_MIN_WEIGHTS = 65_536


class _MLPLoss(torch.autograd.Function):
    """Inputs: x [B, D], eps [B, latent] or None (AE), beta, layer counts, the matmul dtype, then
    (weight, bias) of each encoder Linear, the mean head, the log-variance head (VAE only), each
    decoder Linear. Outputs: recon, kl, total per image.

    The VAE's two heads run as one Linear with their weights stacked (one small matmul instead
    of two each way). Each layer's matmuls run in its weight copy's dtype; activations are kept
    in the dtype of the matmul that made them and cast where the next one needs another.
    """

    @staticmethod
    def forward(ctx, x, eps, beta, n_enc, n_dec, mm_dtype, *params):
        ctx.set_materialize_grads(False)  # the usual .total.mean().backward() leaves recon/kl None
        weights, biases = list(params[0::2]), list(params[1::2])
        if eps is not None:  # mean and log-variance heads -> one Linear
            weights[n_enc:n_enc + 2] = [torch.cat(weights[n_enc:n_enc + 2])]
            biases[n_enc:n_enc + 2] = [torch.cat(biases[n_enc:n_enc + 2])]
        weights = [w.to(mm_dtype) if w.numel() >= LOW_PRECISION_MIN_WEIGHTS else w for w in weights]
        layers = [(w, b.to(w.dtype)) for w, b in zip(weights, biases)]

        def linear(a: torch.Tensor, i: int) -> torch.Tensor:
            w, b = layers[i]
            return torch.addmm(b, a.to(w.dtype), w.t())

        acts = [x]  # each Linear's input, kept for its weight gradient
        for i in range(n_enc):
            acts.append(linear(acts[-1], i).relu_())
        head = linear(acts[-1], n_enc).float()
        if eps is None:  # AE: z is the mean, no KL
            z, kl = head, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            extra = []
        else:
            mean, logvar = head.chunk(2, dim=1)
            std = torch.exp(0.5 * logvar)
            z = torch.addcmul(mean, std, eps)
            # KL = 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2), with the -1 summed outside
            kl = torch.addcmul(std * std - logvar, mean, mean).sum(1).sub_(mean.shape[1]).mul_(0.5)
            extra = [eps, mean, std]
        acts.append(z)
        for i in range(n_enc + 1, n_enc + 1 + n_dec - 1):
            acts.append(linear(acts[-1], i).relu_())
        logits = linear(acts[-1], len(layers) - 1).float()
        recon, grad_logits = bernoulli_nll_and_grad(logits, x)
        total = recon if eps is None else recon + beta * kl
        ctx.beta, ctx.n_enc, ctx.n_dec, ctx.vae = beta, n_enc, n_dec, eps is not None
        ctx.save_for_backward(grad_logits, *acts, *extra, *weights)
        return recon, kl, total

    @staticmethod
    def backward(ctx, g_recon, g_kl, g_total):
        saved = ctx.saved_tensors
        n_acts = ctx.n_enc + ctx.n_dec + 1
        grad_logits, acts = saved[0], saved[1:1 + n_acts]
        rest = saved[1 + n_acts:]
        eps, mean, std = rest[:3] if ctx.vae else (None,) * 3
        weights = rest[3:] if ctx.vae else rest
        w_recon = _add(g_recon, g_total)  # d(loss)/d(recon) per image
        w_kl = _add(g_kl, None if g_total is None else ctx.beta * g_total) if ctx.vae else None
        grads: list[torch.Tensor] = []  # (weight, bias) gradients in float32, last layer first

        def linear_back(g: torch.Tensor, i: int, inp: torch.Tensor, input_grad: bool = True):
            """Appends layer i's weight and bias gradients (its output gradient is g) and returns
            the gradient of its input."""
            w = weights[i]
            g = g.to(w.dtype)
            grads.append((g.t().mm(inp.to(w.dtype)).float(), g.sum(0, dtype=torch.float32)))
            return g.mm(w) if input_grad else None

        g = grad_logits.mul_(w_recon.unsqueeze(1)) if w_recon is not None else torch.zeros_like(grad_logits)
        for i in range(len(weights) - 1, ctx.n_enc, -1):  # decoder, from the output back to z
            inp = acts[i]
            g = linear_back(g, i, inp)
            if i > ctx.n_enc + 1:
                g = g.mul_(inp > 0)  # ReLU: inp is the previous layer's output after its ReLU
        g = g.float()  # dL/dz
        if ctx.vae:  # z = mean + std * eps, std = exp(logvar / 2); KL as in forward
            g_mean, g_logvar = g, g * eps * std * 0.5
            if w_kl is not None:
                w_kl = w_kl.unsqueeze(1)
                g_mean = torch.addcmul(g_mean, mean, w_kl)
                g_logvar += (std * std - 1).mul_(w_kl * 0.5)
            g = torch.cat([g_mean, g_logvar], dim=1)
        g = linear_back(g, ctx.n_enc, acts[ctx.n_enc])
        for i in range(ctx.n_enc - 1, -1, -1):  # encoder; x needs no gradient
            g = linear_back(g.mul_(acts[i + 1] > 0), i, acts[i], input_grad=i > 0)
        out: list[torch.Tensor] = []
        for i, (gw, gb) in enumerate(reversed(grads)):
            if i == ctx.n_enc and ctx.vae:  # the stacked heads: mean's rows, then log-variance's
                out += [*zip(gw.chunk(2), gb.chunk(2))]
            else:
                out.append((gw, gb))
        return (None, None, None, None, None, None, *(t for pair in out for t in pair))


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b
