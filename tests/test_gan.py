"""GAN losses against their formulas, the minimax optimum -log 4 + 2 JSD, shapes of the DCGAN networks,
spectral norm through safetensors, and the EMA generator."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit.models import gan as gan_model
from vaekit.models.gan import (GAN, CodedPrior, code_consistency, code_cross_entropy, code_information, discriminator_loss,
                              game_value, generator_loss, random_affine)
from vaekit.nets import ConvDiscriminator, ConvGenerator, conv_stages

LOGITS = [0.0, 2.0, -3.0]


def d(logit: float) -> float:
    """D = sigmoid(l), written out so the oracles do not share the code's softplus."""
    return 1.0 / (1.0 + math.exp(-logit))


def test_discriminator_loss_by_hand():
    real, fake = torch.tensor(LOGITS), torch.tensor(LOGITS[::-1])
    cross_entropy = [-math.log(d(r)) - math.log(1 - d(f)) for r, f in zip(LOGITS, LOGITS[::-1])]
    hinge = [max(0.0, 1 - r) + max(0.0, 1 + f) for r, f in zip(LOGITS, LOGITS[::-1])]
    for kind in ("minimax", "non_saturating"):
        torch.testing.assert_close(discriminator_loss(real, fake, kind), torch.tensor(cross_entropy))
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), torch.tensor(hinge))


def test_generator_loss_and_value_by_hand():
    fake = torch.tensor(LOGITS)
    torch.testing.assert_close(generator_loss(fake, "minimax"), torch.tensor([math.log(1 - d(f)) for f in LOGITS]))
    torch.testing.assert_close(generator_loss(fake, "non_saturating"), torch.tensor([-math.log(d(f)) for f in LOGITS]))
    torch.testing.assert_close(generator_loss(fake, "hinge"), torch.tensor([-f for f in LOGITS]))
    value = [math.log(d(r)) + math.log(1 - d(f)) for r, f in zip(LOGITS, LOGITS[::-1])]
    torch.testing.assert_close(game_value(torch.tensor(LOGITS), torch.tensor(LOGITS[::-1])), torch.tensor(value))


def test_losses_reject_unknown_kind_and_mismatched_batches():
    with pytest.raises(ValueError, match="wasserstein"):
        generator_loss(torch.zeros(3), "wasserstein")
    with pytest.raises(ValueError, match="same shape"):
        discriminator_loss(torch.zeros(3), torch.zeros(3, 1))


def test_value_is_minus_log_4_at_one_half():
    torch.testing.assert_close(game_value(torch.zeros(5), torch.zeros(5)), torch.full((5,), -math.log(4.0)))


def test_value_at_optimal_discriminator_is_minus_log_4_plus_2_jsd():
    """Goodfellow et al. 2014, theorem 1, on a discrete toy: D*(x) = p_data / (p_data + p_g)."""
    p_data, p_g = [0.5, 0.3, 0.15, 0.05], [0.1, 0.3, 0.2, 0.4]
    logits = torch.tensor([math.log(a) - math.log(b) for a, b in zip(p_data, p_g)], dtype=torch.float64)
    n = len(p_data)
    # every (x ~ p_data, x' ~ p_g) pair with its probability: the exact expectation of V
    real, fake = logits.repeat_interleave(n), logits.repeat(n)
    weights = torch.outer(torch.tensor(p_data, dtype=torch.float64), torch.tensor(p_g, dtype=torch.float64)).flatten()
    value = float((weights * game_value(real, fake)).sum())
    m = [(a + b) / 2 for a, b in zip(p_data, p_g)]
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))
    jsd = 0.5 * kl(p_data, m) + 0.5 * kl(p_g, m)
    assert value == pytest.approx(-math.log(4.0) + 2 * jsd, abs=1e-12)
    assert jsd > 0.05  # the toy distributions differ: the check is not -log 4 against itself


def test_non_saturating_gradient_is_strong_where_minimax_saturates():
    fake = torch.tensor([-10.0, -5.0, 0.0, 2.0], requires_grad=True)
    (minimax,) = torch.autograd.grad(generator_loss(fake, "minimax").sum(), fake)
    (non_saturating,) = torch.autograd.grad(generator_loss(fake, "non_saturating").sum(), fake)
    assert bool((minimax < 0).all() and (non_saturating < 0).all())  # both push the fake logits up
    assert float(non_saturating[0] / minimax[0]) > 1e3  # D confidently rejects: minimax ~ -sigmoid(-10)
    assert float(non_saturating[0]) == pytest.approx(-d(10.0))


@pytest.mark.parametrize("shape, stages", [((1, 28, 28), 2), ((1, 8, 8), 1), ((3, 32, 32), 3)])
def test_conv_gan_shapes(shape, stages):
    torch.manual_seed(0)
    assert conv_stages(*shape[1:]) == stages
    model = GAN(math.prod(shape), shape, latent=4, width=8)
    x = model.generate(torch.randn(6, 4))
    assert x.shape == (6, math.prod(shape)) and bool(((x >= 0) & (x <= 1)).all())
    assert model.discriminate(x).shape == (6,)
    assert model.sample(3).shape == (3, math.prod(shape))
    assert ConvGenerator(4, shape, 8)(torch.randn(2, 4)).shape == (2, *shape)
    assert ConvDiscriminator(shape, 8, out_features=5)(torch.rand(2, *shape)).shape == (2, 5)


def test_mlp_gan_on_flat_data_and_conv_refuses_it():
    torch.manual_seed(0)
    model = GAN(5, (1, 1, 5), latent=3, architecture="mlp", hidden=[16, 8])
    x = model.generate(torch.randn(4, 3))
    assert x.shape == (4, 5) and bool(((x >= 0) & (x <= 1)).all())
    assert model.discriminate(x).shape == (4,)
    normalized = GAN(5, (1, 1, 5), latent=3, architecture="mlp", hidden=[16, 8], spectral_norm=True)
    assert normalized.discriminate(x).shape == (4,) and hasattr(normalized.discriminator[0], "parametrizations")
    with pytest.raises(ValueError, match=r"1x1x5.*'mlp'"):
        GAN(5, (1, 1, 5))
    with pytest.raises(ValueError, match="1x5"):
        conv_stages(1, 5)


def test_constructor_errors_name_the_argument():
    for kwargs, name in [({"architecture": "resnet"}, "architecture"), ({"ema": 1.0}, "ema"),
                         ({"latent": 0}, "latent"), ({"width": -1}, "width")]:
        with pytest.raises(ValueError, match=name):
            GAN(64, (1, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="data_dim"):
        GAN(63, (1, 8, 8))


def test_spectral_norm_state_dict_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(0)
    model = GAN(64, (1, 8, 8), latent=4, width=8, spectral_norm=True, ema=0.9)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    x = torch.rand(5, 64)
    for _ in range(3):  # training forwards move the power-iteration vectors and the BatchNorm statistics
        model.discriminate(x), model.generate(torch.randn(5, 4), ema=False)
    model.update_ema()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "gan.safetensors")
    torch.manual_seed(1)
    fresh = GAN(64, (1, 8, 8), latent=4, width=8, spectral_norm=True, ema=0.9)
    fresh.load_state_dict(load_file(tmp_path / "gan.safetensors"))
    model.eval(), fresh.eval()
    z = torch.randn(5, 4)
    torch.testing.assert_close(fresh.discriminate(x), model.discriminate(x), rtol=0, atol=0)
    torch.testing.assert_close(fresh.generate(z), model.generate(z), rtol=0, atol=0)
    with torch.no_grad():  # each weight (a conv's reshaped to [out, in * k * k]) divided by its estimated norm
        for layer in (model.discriminator[0], model.discriminator[-1]):
            assert float(torch.linalg.matrix_norm(layer.weight.flatten(1), 2)) == pytest.approx(1.0, rel=0.05)


def test_ema_update_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    model = GAN(64, (1, 8, 8), latent=4, width=8, ema=0.5)
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(torch.randn_like(p))
    model.generate(torch.randn(8, 4), ema=False)  # a training forward moves the running statistics
    old = [p.clone() for p in model.generator_ema.parameters()]
    model.update_ema()
    for averaged, before, current in zip(model.generator_ema.parameters(), old, model.generator.parameters()):
        torch.testing.assert_close(averaged, (before + current) / 2)
    for averaged, current in zip(model.generator_ema.buffers(), model.generator.buffers()):
        torch.testing.assert_close(averaged, current, rtol=0, atol=0)
    with pytest.raises(ValueError, match="ema"):
        GAN(64, (1, 8, 8), latent=4, width=8).update_ema()


@pytest.mark.parametrize("ema", [0.0, 0.9])
@pytest.mark.parametrize("training", [True, False])
def test_sample_leaves_running_statistics_and_modes(ema, training):
    torch.manual_seed(0)
    model = GAN(64, (1, 8, 8), latent=4, width=8, ema=ema).train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.sample(16)
    model.decode_mean(torch.randn(3, 4))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    assert all(m.training == training for m in model.modules())


def test_code_cross_entropy_by_hand():
    """-log Q(c | x) with Q = softmax(logits) and c the one-hot tail of the latents."""
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    latents = torch.tensor([[0.3, -1.2, 0.0, 1.0, 0.0], [9.0, 9.0, 0.0, 0.0, 1.0]])  # z of 2, then c
    softmax = lambda row, k: math.exp(row[k]) / sum(math.exp(v) for v in row)
    expected = [-math.log(softmax([0.0, 0.0, 0.0], 1)), -math.log(softmax([2.0, -1.0, 0.5], 2))]
    torch.testing.assert_close(code_cross_entropy(logits, latents), torch.tensor(expected))
    assert expected[0] == pytest.approx(math.log(3))  # Q knows nothing: the bound log K - CE is 0
    with pytest.raises(ValueError, match=r"\[B, K\] and \[B, L \+ K\]"):
        code_cross_entropy(logits, latents[:1])


def test_code_information_by_hand():
    """H(mean_b q_b) - mean_b H(q_b) for q_b = softmax(logits_b): 0 when Q says the same for every image,
    log K for certain, equally common groups, and in between by the formula."""
    entropy = lambda q: -sum(p * math.log(p) for p in q if p > 0)
    softmax = lambda row: [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
    rows = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.5], [0.3, 0.3, 0.3], [-2.0, 0.0, 1.0]]
    q = [softmax(r) for r in rows]
    marginal = [sum(col) / len(q) for col in zip(*q)]
    expected = entropy(marginal) - sum(entropy(p) for p in q) / len(q)
    assert float(code_information(torch.tensor(rows))) == pytest.approx(expected, rel=1e-5)
    assert float(code_information(torch.tensor([[1.0, 2.0, 3.0]] * 4))) == pytest.approx(0.0, abs=1e-6)
    certain = 50.0 * torch.eye(4).repeat(3, 1)  # 12 images, 3 per group, each group certain
    assert float(code_information(certain)) == pytest.approx(math.log(4), abs=1e-5)
    with pytest.raises(ValueError, match=r"code_logits: expected \[B, K\] with K >= 2"):
        code_information(torch.zeros(5))


def test_code_consistency_by_hand_and_its_gradient_reaches_only_the_moved_images():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    moved = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)
    p = lambda row: [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(p(a), p(b)))
    expected = torch.tensor([kl([1.0, 0.0, -1.0], [0.0, 0.0, 0.0]), 0.0])
    value = code_consistency(logits.requires_grad_(), moved)
    torch.testing.assert_close(value, expected)
    value.sum().backward()
    assert logits.grad is None and moved.grad[0].abs().sum() > 0 and moved.grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match=r"same shape \[B, K\]"):
        code_consistency(logits, moved[:1])


def test_random_affine_moves_within_its_ranges(monkeypatch):
    """Bilinear resampling keeps grey levels in [0, 1]; with zero ranges it is the identity; a single lit
    pixel moves by at most the shift plus what rotation and scaling do at its distance from the centre."""
    images = torch.rand(6, 1, 28, 28)
    moved = random_affine(images)
    assert moved.shape == images.shape and moved.min() >= 0 and moved.max() <= 1 and not torch.equal(moved, images)
    dot = torch.zeros(200, 1, 28, 28)
    dot[:, 0, 13:15, 13:15] = 1.0  # at the centre: rotation and scale barely move it
    centre = lambda x: (x[:, 0].sum(1) * torch.arange(28.0)).sum(1) / x[:, 0].sum((1, 2))
    assert (centre(random_affine(dot)) - 13.5).abs().max() <= 28 * gan_model.AFFINE_SHIFT + 0.6
    for name in ("AFFINE_DEGREES", "AFFINE_SCALE", "AFFINE_SHIFT"):
        monkeypatch.setattr(gan_model, name, 0.0)
    torch.testing.assert_close(random_affine(images), images)


def test_coded_prior_samples_one_hot_codes_uniformly_and_scores_them():
    prior = CodedPrior(torch.zeros(3), torch.ones(3), 4)
    torch.manual_seed(0)
    v = prior.sample((40000,))
    assert v.shape == (40000, 7) and prior.event_shape == (7,)
    codes = v[:, 3:]
    assert torch.all(codes.sum(1) == 1) and torch.all((codes == 0) | (codes == 1))
    torch.testing.assert_close(codes.mean(0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    torch.testing.assert_close(v[:, :3].std(0), torch.ones(3), atol=0.02, rtol=0)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = normal.log_prob(v[:5, :3]).sum(-1) - math.log(4)
    torch.testing.assert_close(prior.log_prob(v[:5]), expected)


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_gan_with_a_code_reads_it_and_answers_q(architecture):
    model = GAN(64, (1, 8, 8), latent=4, architecture=architecture, width=8, hidden=[16], categories=3)
    z = model.latents(5)
    assert z.shape == (5, 7) and torch.all(z[:, 4:].sum(1) == 1)
    assert model.generate(z).shape == (5, 64) and model.sample(6).shape == (6, 64)
    logits, code_logits = model.discriminate_code(model.generate(z))
    assert logits.shape == (5,) and code_logits.shape == (5, 3)
    torch.testing.assert_close(model.discriminate(model.generate(z)), logits)
    assert model.prior().sample((2,)).shape == (2, 7)
    plain = GAN(64, (1, 8, 8), latent=4, width=8)
    assert plain.latents(5).shape == (5, 4) and plain.discriminate_code(plain.generate(plain.latents(5)))[1].shape == (5, 0)
    with pytest.raises(ValueError, match="categories: expected 0 .* >= 2, got 1"):
        GAN(64, (1, 8, 8), latent=4, width=8, categories=1)
