"""A decoder and a map's inverse as plain arrays, for decoding outside PyTorch (the Grid
decoder's live, in-browser decode).

An MLP-family decoder is a chain of dense layers: `export_decoder` flattens it to a list of
`DenseLayer`s (weight [out, in] as PyTorch stores it, bias [out], one activation), folding an
eval-mode BatchNorm1d that follows a Linear into that Linear. `decode_exported` runs the list
in NumPy: the reference the JavaScript decoder is tested against besides `model.decode`.

A linear map (latent axes, PCA; each maybe rotated and scaled onto the other model's map) has
an affine inverse, map point p -> code z = p @ W + c: `affine_inverse` composes it.
UMAP and t-SNE have no such inverse, conv decoders no dense chain: both raise `ExportError`.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import LatentExplorerError
from .models import Autoencoder
from .projections import IdentityProjection, PCAProjection, Projection, SimilarityTransform

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
# decoder output -> displayable image in [0, 1] (Autoencoder.to_image): Bernoulli logits go
# through a sigmoid, Tanh outputs on [-1, 1] are shifted to [0, 1], the rest is clamped only
DISPLAYS = ("sigmoid", "half_shift", "clamp")


class ExportError(LatentExplorerError):
    """This decoder or map cannot be exported for the live decode (the click path remains)."""


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """y = act(weight @ x + bias); weight [out, in] float32, bias [out] float32."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str = "identity"
    slope: float = 0.0  # LeakyReLU's negative slope

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]


@dataclass(frozen=True, eq=False)
class ExportedDecoder:
    layers: list
    image_shape: tuple  # (C, H, W): the last layer's outputs in this order
    display: str  # how an output becomes an image in [0, 1]: one of DISPLAYS

    @property
    def latent_dim(self) -> int:
        return self.layers[0].n_in

    @property
    def num_parameters(self) -> int:
        return sum(layer.weight.size + layer.bias.size for layer in self.layers)


@dataclass(frozen=True, eq=False)
class AffineInverse:
    """A map point p [2] -> the model's code z = p @ weight + offset; weight [2, d], offset [d]."""

    weight: np.ndarray
    offset: np.ndarray

    def __call__(self, points) -> np.ndarray:
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return (p @ self.weight + self.offset).astype(np.float32)


# --- the decoder --------------------------------------------------------------------------
def _flat_modules(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flat_modules(child)]
    return [module]


def _fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN(Wx + b) = s * (Wx + b - mu) + beta with s = gamma / sqrt(var + eps), in eval mode:
    the same affine map as (s[:, None] * W) x + s * (b - mu) + beta."""
    if bn.running_mean is None:
        raise ExportError("a BatchNorm1d without running statistics cannot be folded")
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    return weight * scale[:, None], (bias - bn.running_mean) * scale + shift


def export_decoder(model: Autoencoder) -> ExportedDecoder:
    """The model's decoder as dense layers (float64 maths, float32 results)."""
    cfg = model.config
    layers: list[DenseLayer] = []
    weight = bias = None  # the pending Linear, before its activation is known

    def close(activation: str = "identity", slope: float = 0.0) -> None:
        nonlocal weight, bias
        if weight is None:
            raise ExportError(f"{activation} without a Linear before it in the decoder")
        layers.append(DenseLayer(weight.numpy().astype(np.float32), bias.numpy().astype(np.float32),
                                 activation, float(slope)))
        weight = bias = None

    with torch.no_grad():
        for m in _flat_modules(model.decoder):
            if isinstance(m, nn.Linear):
                if weight is not None:
                    close()
                weight = m.weight.detach().cpu().double()
                bias = (m.bias.detach().cpu().double() if m.bias is not None
                        else torch.zeros(m.out_features, dtype=torch.float64))
            elif isinstance(m, nn.BatchNorm1d):
                if weight is None:
                    raise ExportError("a BatchNorm1d must follow a Linear to be folded into it")
                weight, bias = _fold_batchnorm(weight, bias, _double(m))
            elif isinstance(m, nn.ReLU):
                close("relu")
            elif isinstance(m, nn.LeakyReLU):
                close("leaky_relu", m.negative_slope)
            elif isinstance(m, nn.Sigmoid):
                close("sigmoid")
            elif isinstance(m, nn.Tanh):
                close("tanh")
            elif isinstance(m, (nn.Identity, nn.Unflatten, nn.Flatten, nn.Dropout)):
                continue  # no arithmetic (Dropout: eval mode); Unflatten: outputs stay in C, H, W order
            else:
                raise ExportError(f"the {cfg.family} decoder has a {type(m).__name__}: only Linear, BatchNorm1d "
                                  f"and ReLU / LeakyReLU / Sigmoid / Tanh chains decode live")
        if weight is not None:
            close()
    if not layers or layers[-1].n_out != cfg.num_pixels:
        raise ExportError(f"the decoder does not end in a Linear with {cfg.num_pixels} outputs")
    display = ("sigmoid" if cfg.likelihood == "bernoulli" else "half_shift" if cfg.data_range == "symmetric"
               else "clamp")
    return ExportedDecoder(layers, tuple(cfg.image_shape), display)


def _double(bn: nn.BatchNorm1d) -> nn.BatchNorm1d:
    copy = nn.BatchNorm1d(bn.num_features, eps=bn.eps, affine=bn.affine).double().eval()
    copy.load_state_dict(bn.state_dict())
    return copy


def _activate(x: np.ndarray, layer: DenseLayer) -> np.ndarray:
    if layer.activation == "relu":
        return np.maximum(x, 0)
    if layer.activation == "leaky_relu":
        return np.where(x >= 0, x, layer.slope * x)
    if layer.activation == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if layer.activation == "tanh":
        return np.tanh(x)
    return x


def decode_exported(decoder: ExportedDecoder, codes) -> np.ndarray:
    """Codes [M, d] -> raw decoder outputs [M, C*H*W] (what model.decode returns, flattened)."""
    x = np.atleast_2d(np.asarray(codes, dtype=np.float64))
    for layer in decoder.layers:
        x = _activate(x @ layer.weight.T.astype(np.float64) + layer.bias, layer)
    return x


def to_display(decoder: ExportedDecoder, outputs: np.ndarray) -> np.ndarray:
    """Raw outputs -> pixel values in [0, 1], as Autoencoder.to_image."""
    if decoder.display == "sigmoid":
        outputs = 1 / (1 + np.exp(-outputs))
    elif decoder.display == "half_shift":
        outputs = (outputs + 1) / 2
    return np.clip(outputs, 0, 1)


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def decoder_payload(decoder: ExportedDecoder, dtype: str = "float32") -> dict:
    """JSON-ready: each layer's weight (row-major [out, in]) and bias as base64 of
    little-endian float32 (exact: the browser decodes what PyTorch decodes to ~1e-6) or
    float16 (half the bytes; weights rounded to 11 significant bits, errors up to ~1e-3)."""
    if dtype not in ("float32", "float16"):
        raise ExportError(f"dtype={dtype!r}: expected 'float32' or 'float16'")
    return {"dtype": dtype, "image_shape": list(decoder.image_shape), "display": decoder.display,
            "layers": [{"n_in": layer.n_in, "n_out": layer.n_out, "activation": layer.activation,
                        "slope": layer.slope, "weight": _b64(layer.weight, dtype), "bias": _b64(layer.bias, dtype)}
                       for layer in decoder.layers]}


# --- the map's inverse ----------------------------------------------------------------------
def affine_inverse(projection: Projection, alignment: SimilarityTransform | None = None) -> AffineInverse:
    """The exact inverse of a linear map as one affine map, p -> z.

    alignment: the transform that placed this model's map onto the shared frame (the AE's
    Procrustes fit onto the VAE's map), undone first: own = (p - t) @ R.T / s + m."""
    if isinstance(projection, PCAProjection):
        to_code_w = projection.components_.astype(np.float64)  # [2, d]
        to_code_b = projection.mean_.astype(np.float64)
    elif isinstance(projection, IdentityProjection):
        to_code_w, to_code_b = np.eye(2), np.zeros(2)
    else:
        raise ExportError(f"the {projection.method} map has no linear inverse: live decoding needs latent axes or "
                          "PCA (a UMAP or t-SNE location is still decoded by a click)")
    if alignment is None:
        return AffineInverse(to_code_w, to_code_b)
    rot = np.asarray(alignment.rotation, np.float64)
    own_w = rot.T / alignment.scale  # p -> own = p @ own_w + own_b
    own_b = np.asarray(alignment.source_mean, np.float64) - np.asarray(alignment.target_mean, np.float64) @ own_w
    return AffineInverse(own_w @ to_code_w, own_b @ to_code_w + to_code_b)
