"""Latent-space metrics on constructed cases whose answers are known, and the evaluation table."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vae import metrics
from vae.checkpoint import Checkpoint, save_checkpoint
from vae.classifier import save_classifier, train_classifier
from vae.data import ImageDataset, ImageSplit
from vae.errors import ConfigError
from vae.evaluate import dataset_key, evaluate_checkpoint, format_table
from vae.evaluate import main as evaluate_main
from vae.models import Autoencoder, ModelConfig, Posterior

SIZE = 12


def block_images(n: int, seed: int = 0):
    """Four classes: a bright 4x4 block in one quadrant of a noisy dark 12x12 image."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 30, (n, 1, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, q = 1 + 6 * (c // 2), 1 + 6 * (c % 2)
        images[i, :, r:r + 4, q:q + 4] = 255
    return images, labels


class QuadrantClassifier(nn.Module):
    """A hand-built judge: the class is the brightest quadrant, sharper the clearer it is."""

    def _scores(self, images):
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        h = x.shape[-1] // 2
        quads = [x[..., :h, :h], x[..., :h, h:], x[..., h:, :h], x[..., h:, h:]]
        return torch.stack([q.mean((1, 2, 3)) for q in quads], 1)

    def probs(self, images):
        return torch.softmax(30 * self._scores(images), 1)

    def features(self, images):
        return self._scores(images)


class FakeDecoderModel(nn.Module):
    """decode_images ignores the code's value: stored images in turn, or uniform noise."""

    def __init__(self, images=None, latent_dim=2):
        super().__init__()
        self.config = SimpleNamespace(latent_dim=latent_dim)
        self.images = images

    def decode_images(self, z):
        if self.images is None:
            return torch.rand((len(z), 1, SIZE, SIZE), generator=torch.Generator().manual_seed(len(z)))
        return self.images[torch.arange(len(z)) % len(self.images)].float() / 255


class LineModel(nn.Module):
    """A 1-D latent: code 0 for top-left images, 1 for bottom-right; decoded as a blend or a jump."""

    def __init__(self, jump: bool):
        super().__init__()
        self.config = SimpleNamespace(latent_dim=1)
        self.jump = jump
        a, b = block_images(4)[0][[0, 3]].float() / 255
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def preprocess(self, images):
        return images.float() / 255

    def encode(self, x):
        return Posterior(x[:, :, 6:, 6:].mean((1, 2, 3))[:, None].gt(0.3).float())

    def decode_images(self, z):
        t = z[:, :1, None, None].clamp(0, 1)
        t = (t >= 0.5).float() if self.jump else t
        return (1 - t) * self.a + t * self.b


def tiny_model(variational=True, latent_dim=4, seed=0) -> Autoencoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(variational=variational, latent_dim=latent_dim, image_shape=(1, SIZE, SIZE), hidden=(32,))
    return Autoencoder(cfg).eval()


def blocks_split(n=200, seed=1) -> ImageSplit:
    return ImageSplit(*block_images(n, seed))


JUDGE = QuadrantClassifier()


# --- completeness ----------------------------------------------------------------------------
def test_noise_decoder_is_less_complete_than_real_images():
    real = metrics.completeness(FakeDecoderModel(block_images(40)[0]), JUDGE, n=200, seed=0)
    noise = metrics.completeness(FakeDecoderModel(None), JUDGE, n=200, seed=0)
    assert real["confident_share"] == 1.0 and real["class_evenness"] == pytest.approx(1.0)
    assert noise["confident_share"] < 0.2 < real["confident_share"]
    assert noise["mean_confidence"] < real["mean_confidence"]


def test_reference_share_of_real_images():
    out = metrics.reference_confidence_share(JUDGE, block_images(100)[0])
    assert out["confident_share"] == 1.0 and out["class_evenness"] == pytest.approx(1.0)


def test_class_evenness_extremes():
    assert str(metrics.class_evenness(torch.zeros(50, dtype=torch.long), 10)) == "0.0"  # not "-0.0"
    assert metrics.class_evenness(torch.arange(50) % 10, 10) == pytest.approx(1.0)


def test_completeness_is_reproducible():
    model = tiny_model()
    first = metrics.completeness(model, JUDGE, n=300, seed=5)
    assert first == metrics.completeness(model, JUDGE, n=300, seed=5)
    assert first != metrics.completeness(model, JUDGE, n=300, seed=6)


# --- continuity ------------------------------------------------------------------------------
def test_continuity_tells_a_blend_from_a_jump():
    split, steps = ImageSplit(*block_images(200)), 8
    smooth = metrics.continuity(LineModel(jump=False), split, JUDGE, n_pairs=60, steps=steps, seed=0)
    jumpy = metrics.continuity(LineModel(jump=True), split, JUDGE, n_pairs=60, steps=steps, seed=0)
    assert smooth["max_step_share_mean"] == pytest.approx(1 / steps) == smooth["even_share"]
    assert jumpy["max_step_share_mean"] > 0.3  # every top-left to bottom-right path is one jump
    assert jumpy["max_step_share_median"] in (pytest.approx(1 / steps), pytest.approx(1.0))
    # the blend crosses a half-and-half image the judge is unsure of; the jump never does
    assert smooth["min_confidence_mean"] < jumpy["min_confidence_mean"]


def test_continuity_is_reproducible_and_checks_sizes():
    model, split = tiny_model(), blocks_split(40)
    run = lambda: metrics.continuity(model, split, JUDGE, n_pairs=10, steps=4, seed=2)  # noqa: E731
    assert run() == run()
    with pytest.raises(ConfigError, match="n_pairs"):
        metrics.continuity(model, split, JUDGE, n_pairs=21, steps=4)


# --- Fréchet distance ----------------------------------------------------------------------------
def test_frechet_of_identical_features_is_zero():
    a = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
    assert metrics.frechet_distance(a, a.clone()) == pytest.approx(0.0, abs=1e-6)


def test_frechet_matches_the_gaussian_closed_form():
    # b = c * a + s: mu_b = c mu_a + s, S_b = c^2 S_a, so d^2 = ||(1 - c) mu_a - s||^2 + (1 - c)^2 Tr(S_a)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 5)) + 1.0
    mu, trace = a.mean(0), np.trace(np.cov(a, rowvar=False))
    for c, shift in [(1.0, 0.5), (1.0, 2.0), (0.5, 0.0), (2.0, 1.0)]:
        expected = np.sum(((1 - c) * mu - shift) ** 2) + (1 - c) ** 2 * trace
        assert metrics.frechet_distance(a, c * a + shift) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_frechet_grows_with_the_mean_shift():
    a = torch.randn(1000, 4, generator=torch.Generator().manual_seed(1))
    distances = [metrics.frechet_distance(a, a + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[-1] == pytest.approx(4 * 4.0, rel=1e-6)


def test_frechet_survives_dead_features():
    a = torch.randn(300, 4, generator=torch.Generator().manual_seed(2))
    a[:, 2] = 0  # a ReLU unit that never fires: singular covariances
    d = metrics.frechet_distance(a, a + torch.tensor([1.0, 0, 0, 0]))
    assert math.isfinite(d) and d == pytest.approx(1.0, rel=1e-3)


def test_sample_fid_prefers_real_looking_samples():
    split = blocks_split(200)
    real = metrics.sample_fid(FakeDecoderModel(block_images(200, seed=7)[0]), JUDGE, split, n=200, seed=0)
    noise = metrics.sample_fid(FakeDecoderModel(None), JUDGE, split, n=200, seed=0)
    assert real["frechet_distance"] < noise["frechet_distance"] / 10


# --- latent dimensions in use --------------------------------------------------------------------
def test_active_units_counts_a_dead_dimension():
    model = tiny_model(latent_dim=3)
    with torch.no_grad():
        model.to_mean.weight.mul_(20)
        model.to_mean.weight[1] = 0  # E_q[z_1] is the bias whatever x is: Cov_x = 0
    out = metrics.active_units(model, blocks_split(200))
    assert out == {"active_units": 2.0, "latent_dim": 3.0}


def test_kl_per_dimension_sums_to_the_kl():
    model, split = tiny_model(), blocks_split(100)
    per_dim = metrics.kl_per_dimension(model, split)
    assert list(per_dim) == ["z0", "z1", "z2", "z3"] and min(per_dim.values()) >= 0
    assert sum(per_dim.values()) == pytest.approx(metrics.likelihood_metrics(model, split)["kl"], rel=1e-5)
    assert set(metrics.kl_per_dimension(tiny_model(variational=False), split).values()) == {0.0}


# --- importance-weighted likelihood ----------------------------------------------------------------
def test_iwae_is_tighter_than_the_elbo():
    model, split = tiny_model(), blocks_split(200)
    neg_elbo = metrics.likelihood_metrics(model, split)["neg_elbo"]
    one = metrics.iwae_nll(model, split, k=1, seed=0, n_images=200)["iwae_nll"]
    many = metrics.iwae_nll(model, split, k=64, seed=0, n_images=200)["iwae_nll"]
    assert one == pytest.approx(neg_elbo, rel=0.02)  # k = 1 is the ELBO (Monte-Carlo KL)
    assert many < neg_elbo and many < one


def test_iwae_is_reproducible_and_absent_for_the_ae():
    model, split = tiny_model(), blocks_split(50)
    run = lambda: metrics.iwae_nll(model, split, k=8, seed=3, n_images=50)  # noqa: E731
    assert run() == run()
    assert metrics.iwae_nll(tiny_model(variational=False), split, k=8) == {}


# --- the evaluation table ----------------------------------------------------------------------
def test_dataset_key_from_name_or_shape():
    assert dataset_key("mnist", (1, 28, 28)) == "mnist"
    assert dataset_key("Fashion_MNIST", (1, 28, 28)) == "fashion-mnist"
    assert dataset_key("cifar10-jpg", (3, 32, 32)) == "cifar10"
    assert dataset_key("my-digits", (1, 28, 28)) == "mnist"
    with pytest.raises(ConfigError, match="--classifier"):
        dataset_key("faces", (3, 64, 64))


def test_evaluate_pair_end_to_end(tmp_path, capsys):
    (xtr, ytr), (xte, yte) = block_images(200, 0), block_images(60, 1)
    data = ImageDataset("blocks", ImageSplit(xtr, ytr), ImageSplit(xte, yte), ["tl", "tr", "bl", "br"])
    npz = tmp_path / "blocks.npz"
    np.savez(npz, x_train=xtr[:, 0].numpy(), y_train=ytr.numpy(), x_test=xte[:, 0].numpy(), y_test=yte.numpy())
    clf = save_classifier(train_classifier(data, epochs=1, batch_size=32, channels=(4,)), tmp_path / "clf.safetensors")
    paths = [save_checkpoint(Checkpoint(tiny_model(v), dataset=data.describe()), tmp_path / f"blocks-{k}.safetensors")
             for v, k in ((False, "ae"), (True, "vae"))]
    small = dict(n=40, seed=0, iwae_k=4, iwae_images=20, n_pairs=10, steps=4)
    figures = evaluate_checkpoint(paths[1], data, clf, **small)
    assert figures == evaluate_checkpoint(paths[1], data, clf, **small)  # seeded: the same figures
    assert {"iwae_nll", "prior_confident_share", "box_confident_share", "frechet_distance",
            "max_step_share_mean", "active_units"} <= set(figures)
    args = [*map(str, paths), "--data", str(npz), "--classifier", str(clf), "--n", "40", "--iwae-k", "4",
            "--iwae-images", "20", "--pairs", "10", "--steps", "4"]
    assert evaluate_main(args) == 0
    out = capsys.readouterr().out
    assert "seed=0" in out and "blocks-ae" in out and "blocks-vae" in out and "IWAE NLL" in out


def test_format_table_marks_undefined_figures():
    table = format_table({"ae": {"recon": 1.0}, "vae": {"recon": 2.0, "iwae_nll": 3.0}})
    assert "IWAE NLL" in table and " -" in table.splitlines()[2]


def test_a_failed_evaluation_leaves_the_model_in_the_mode_it_was_in():
    from vae.data import ImageSplit

    model = Autoencoder(ModelConfig(family="mlp", hidden=(8,), latent_dim=2)).train()
    wrong = ImageSplit(torch.zeros(3, 1, 5, 5, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(RuntimeError):
        metrics.likelihood_metrics(model, wrong)
    assert model.training
