"""vae/export.py: a dense decoder exported to arrays decodes what PyTorch decodes; a linear
map's inverse is one affine map; what cannot be exported says so."""
from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from torch import nn

from vae.export import (ExportError, affine_inverse, decode_exported, decoder_payload, export_decoder,
                        to_display)
from vae.models import ModelConfig, build_model
from vae.projections import make_projection, procrustes_align

CONFIGS = {
    "mlp-bernoulli": ModelConfig(family="mlp", latent_dim=3, hidden=(12, 8), image_shape=(1, 6, 6)),
    "mlp-gaussian-unit": ModelConfig(family="mlp", latent_dim=2, hidden=(10,), image_shape=(1, 4, 4),
                                     likelihood="gaussian-fixed"),
    "tutorial-tanh": ModelConfig(family="tutorial-mlp", latent_dim=5, image_shape=(1, 28, 28),
                                 likelihood="gaussian-fixed", data_range="symmetric"),
    "mlp-rgb": ModelConfig(family="mlp", latent_dim=4, hidden=(9,), image_shape=(3, 4, 4), likelihood="gaussian-learned"),
}


def _model(cfg: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _codes(d: int, n: int = 7) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1)) * 2


@pytest.mark.parametrize("name", CONFIGS)
def test_the_exported_decoder_decodes_what_pytorch_decodes(name):
    model = _model(CONFIGS[name])
    exported = export_decoder(model)
    z = _codes(model.config.latent_dim)
    with torch.no_grad():
        expected = model.decode(z).reshape(len(z), -1).numpy()
    assert np.abs(decode_exported(exported, z.numpy()) - expected).max() < 1e-5
    images = model.decode_images(z).reshape(len(z), -1).numpy()
    assert np.abs(to_display(exported, decode_exported(exported, z.numpy())) - images).max() < 1e-6
    assert exported.num_parameters == sum(p.numel() for p in model.decoder.parameters())


def test_the_display_transform_follows_the_likelihood():
    assert export_decoder(_model(CONFIGS["mlp-bernoulli"])).display == "sigmoid"
    assert export_decoder(_model(CONFIGS["tutorial-tanh"])).display == "half_shift"
    assert export_decoder(_model(CONFIGS["mlp-gaussian-unit"])).display == "clamp"
    assert [layer.activation for layer in export_decoder(_model(CONFIGS["tutorial-tanh"])).layers] == \
        ["relu", "relu", "tanh"]


def test_a_batchnorm_after_a_linear_is_folded_into_it():
    model = _model(CONFIGS["mlp-bernoulli"])
    bn = nn.BatchNorm1d(8)
    with torch.no_grad():  # statistics far from the identity, so a fold that ignored them would fail
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    model.decoder = nn.Sequential(nn.Sequential(nn.Linear(3, 8), bn, nn.LeakyReLU(0.2), nn.Linear(8, 36),
                                                nn.Unflatten(1, (1, 6, 6))), nn.Sigmoid()).eval()
    exported = export_decoder(model)
    assert [(layer.activation, layer.n_in, layer.n_out) for layer in exported.layers] == \
        [("leaky_relu", 3, 8), ("sigmoid", 8, 36)]
    assert exported.layers[0].slope == pytest.approx(0.2)
    z = _codes(3)
    with torch.no_grad():
        expected = model.decode(z).reshape(len(z), -1).numpy()
    assert np.abs(decode_exported(exported, z.numpy()) - expected).max() < 1e-5


def test_a_conv_decoder_is_refused_with_the_reason():
    model = _model(ModelConfig(family="conv", latent_dim=4, hidden=(4, 8), image_shape=(3, 8, 8)))
    with pytest.raises(ExportError, match="ConvTranspose2d"):
        export_decoder(model)


def test_the_payload_holds_the_exact_float32_weights_and_rounds_float16():
    exported = export_decoder(_model(CONFIGS["tutorial-tanh"]))
    payload = decoder_payload(exported)
    first = payload["layers"][0]
    weight = np.frombuffer(base64.b64decode(first["weight"]), dtype="<f4").reshape(first["n_out"], first["n_in"])
    assert np.array_equal(weight, exported.layers[0].weight)
    assert payload["image_shape"] == [1, 28, 28] and payload["display"] == "half_shift"
    half = decoder_payload(exported, "float16")["layers"][0]
    w16 = np.frombuffer(base64.b64decode(half["weight"]), dtype="<f2").astype(np.float32).reshape(weight.shape)
    assert np.abs(w16 - weight).max() <= np.abs(weight).max() * 2 ** -11
    assert not np.array_equal(w16, weight)
    with pytest.raises(ExportError):
        decoder_payload(exported, "int8")


def test_the_affine_inverse_of_an_aligned_pca_map_is_the_maps_own_inverse():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(300, 6)).astype(np.float32) * np.array([3, 2, 1, 0.5, 0.3, 0.1], np.float32)
    other = (codes @ rng.normal(size=(6, 6))).astype(np.float32)
    pca, ref = make_projection("pca", 6).fit(other), make_projection("pca", 6).fit(codes)
    _, align = procrustes_align(pca.embedding_, ref.embedding_)
    points = rng.uniform(-4, 4, size=(20, 2))
    expected = pca.inverse_transform(align.invert(points))
    inverse = affine_inverse(pca, align)
    assert inverse.weight.shape == (2, 6) and inverse.offset.shape == (6,)
    np.testing.assert_allclose(inverse(points), expected, atol=1e-4)
    np.testing.assert_allclose(affine_inverse(ref)(points), ref.inverse_transform(points), atol=1e-5)


def test_the_affine_inverse_of_latent_axes_is_the_point_itself():
    ident = make_projection("identity", 2).fit(np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32))
    points = np.array([[0.5, -1.25], [3.0, 2.0]])
    np.testing.assert_allclose(affine_inverse(ident)(points), points)


def test_a_non_linear_map_has_no_affine_inverse():
    with pytest.raises(ExportError, match="no linear inverse"):
        affine_inverse(make_projection("tsne", 16))
