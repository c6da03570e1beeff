import pytest
import torch

from vae import ConfigError, PRESETS, get_preset, make_pair
from vae.models import Autoencoder, ModelConfig, count_parameters


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_pair_has_the_right_shapes(preset):
    p = get_preset(preset)
    models = make_pair(preset, p.base.image_shape)
    x = torch.randint(0, 256, (2, *p.base.image_shape), dtype=torch.uint8)
    for kind, m in models.items():
        q = m.encode(m.preprocess(x))
        assert q.mean.shape == (2, m.config.latent_dim)
        assert (q.logvar is None) == (kind == "ae")
        assert m.decode_images(q.mode()).shape == (2, *p.base.image_shape)
        terms = m.loss(m.preprocess(x))
        assert terms.total.shape == (2,) and torch.isfinite(terms.total).all()


def test_ae_and_vae_share_encoder_and_decoder():
    pair = make_pair("mnist-mlp", (1, 28, 28))
    ae, vae = pair["ae"], pair["vae"]
    extra = count_parameters(vae) - count_parameters(ae)
    assert extra == count_parameters(vae.to_logvar)  # the VAE adds only the log-variance head
    assert [n for n, _ in ae.encoder.named_parameters()] == [n for n, _ in vae.encoder.named_parameters()]


def test_tutorial_mnist_preset_is_the_tutorials_network():
    m = make_pair("tutorial-mnist-mlp", (1, 28, 28))["vae"]
    linears = [l for l in m.encoder if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 196), (196, 49), (49, 28)]
    bns = [l for l in m.encoder if isinstance(l, torch.nn.BatchNorm1d)]
    assert [b.momentum for b in bns] == [0.7, 0.7]
    assert isinstance(m.encoder[-1], torch.nn.LeakyReLU)
    assert isinstance(m.decoder[-1], torch.nn.Tanh)
    assert m.config.latent_dim == 28 and m.config.data_range == "symmetric"
    x = torch.full((1, 1, 28, 28), 255, dtype=torch.uint8)
    assert m.preprocess(x).max() == 1 and m.preprocess(torch.zeros_like(x)).min() == -1


def test_tutorial_resnet18_preset():
    m = make_pair("tutorial-cifar-resnet18", (3, 32, 32))["vae"]
    assert m.config.latent_dim == 256 and m.to_mean.in_features == 512
    assert m.encoder.conv1.kernel_size == (3, 3) and isinstance(m.encoder.maxpool, torch.nn.Identity)
    assert m.log_scale is not None and m.config.kl_estimator == "monte-carlo"


def test_vae_samples_in_training_and_uses_the_mean_in_eval():
    m = make_pair("mnist-2d", (1, 28, 28))["vae"]
    x = m.preprocess(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_ae_loss_has_no_kl_and_vae_beta_weights_it():
    torch.manual_seed(0)
    pair = make_pair("mnist-2d", (1, 28, 28), beta=0.0)
    x = pair["vae"].preprocess(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    assert torch.equal(pair["ae"].loss(x).kl, torch.zeros(4))
    t = pair["vae"].loss(x, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(t.total, t.recon) and (t.kl > 0).all()


@pytest.mark.parametrize("field,value", [("latent_dim", 0), ("beta", -1.0), ("family", "transformer"),
                                         ("likelihood", "poisson"), ("hidden", ())])
def test_nonsense_configs_name_the_parameter(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{field: value})


def test_unknown_preset_and_wrong_image_size():
    with pytest.raises(ConfigError, match="preset"):
        get_preset("gan")
    with pytest.raises(ConfigError, match="divisible"):
        make_pair("cifar-conv", (1, 28, 28))


def test_config_round_trips_through_a_dict():
    cfg = get_preset("cifar-conv").config(True, latent_dim=7)
    assert Autoencoder(type(cfg).from_dict(cfg.to_dict())).config == cfg


def test_a_diverging_log_variance_is_clamped_so_the_loss_stays_finite():
    # diffusers' DiagonalGaussianDistribution clamps to [-30, 20]: sigma from 3e-7 to 2e4
    vae = make_pair("mnist-2d", (1, 28, 28), kinds=("vae",))["vae"]
    x = vae.preprocess(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    for bias in (1e4, -1e4):
        with torch.no_grad():
            vae.to_logvar.bias.fill_(bias)
        q = vae.encode(x)
        assert q.logvar.min() >= -30 and q.logvar.max() <= 20
        assert torch.isfinite(q.std).all() and torch.isfinite(vae.loss(x).total).all()
