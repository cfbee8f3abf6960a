"""VAE and objectives: shapes, analytic vs Monte Carlo, the bound ordering, exact log p(x) oracle."""

import math
from dataclasses import replace

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.evaluate import log_likelihood
from vaekit.models import VAE
from vaekit.objectives import bits_per_dim, elbo, iwae_bound, log_mean_exp, standard_error


def make_vae(likelihood="bernoulli", hidden=(16,), data_dim=12, latent=3, seed=0):
    torch.manual_seed(seed)
    return VAE(data_dim, list(hidden), latent, "tanh", likelihood)


def data_for(model, batch=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, model.data_dim, generator=g)
    return torch.bernoulli(x, generator=g) if model.likelihood_name == "bernoulli" else x


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("num_samples", [1, 4])
def test_log_weights_and_elbo_shapes(likelihood, num_samples):
    model = make_vae(likelihood)
    x = data_for(model)
    assert model.log_weights(x, num_samples).shape == (num_samples, 7)
    assert model.elbo(x, num_samples).shape == (7,)
    rec, kl = model.elbo_terms(x, num_samples)
    assert rec.shape == kl.shape == (7,) and bool((kl >= 0).all())
    assert model.sample(5).shape == (5, 12)
    assert model.posterior(x).event_shape == (3,) and model.likelihood(torch.zeros(2, 3)).event_shape == (12,)


def test_log_mean_exp_is_stable_and_exact():
    log_w = torch.tensor([[1000.0, -1000.0], [1000.0, -1002.0]])
    expected = torch.tensor([1000.0, -1000 + math.log((1 + math.exp(-2)) / 2)])
    torch.testing.assert_close(log_mean_exp(log_w), expected)
    torch.testing.assert_close(elbo(log_w), log_w.mean(0))
    assert iwae_bound(log_w).shape == (2,)


def test_standard_error_and_bits():
    assert standard_error(torch.tensor([1.0, 3.0])) == pytest.approx(1.0)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_analytic_kl_matches_monte_carlo(likelihood):
    model = make_vae(likelihood)
    x = data_for(model)
    with torch.no_grad():
        q, p = model.posterior(x), model.prior()
        z = q.sample((200_000,))
        mc = (q.log_prob(z) - p.log_prob(z))  # [S, B]
        analytic = kl_divergence(q, p)
    stderr = mc.std(0) / math.sqrt(mc.shape[0])
    assert bool(((mc.mean(0) - analytic).abs() < 4 * stderr + 1e-4).all())


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_analytic_elbo_matches_mean_log_weight(likelihood):
    """E_q[log p(x|z)] - KL equals E_q[log p(x,z) - log q(z|x)]: two routes to one number."""
    model = make_vae(likelihood)
    x = data_for(model)
    with torch.no_grad():
        torch.manual_seed(3)
        analytic = model.elbo(x, 20_000)
        lw = model.log_weights(x, 20_000)
    stderr = lw.std(0) / math.sqrt(lw.shape[0])
    assert bool(((elbo(lw) - analytic).abs() < 4 * stderr + 1e-3).all())


def test_bounds_increase_with_num_samples():
    """On average ELBO <= IWAE_K <= IWAE_K' for K < K' (Burda et al. 2016, theorem 1)."""
    model = make_vae("bernoulli", data_dim=20, latent=2)
    x = data_for(model, batch=64)
    torch.manual_seed(0)
    with torch.no_grad():
        means = [float(iwae_bound(model.log_weights(x.repeat(50, 1), k)).mean()) for k in (1, 5, 50)]
        analytic = float(model.elbo(x.repeat(50, 1), 1).mean())
    assert abs(analytic - means[0]) < 0.2
    assert means[0] < means[1] < means[2]


def linear_gaussian_vae(data_dim=6, latent=2, seed=0):
    """A VAE with linear encoder and decoder and Gaussian noise: log p(x) is known exactly."""
    model = make_vae("gaussian", hidden=(), data_dim=data_dim, latent=latent, seed=seed)
    with torch.no_grad():
        model.raw_scale.fill_(0.0)  # noise scale softplus(0) + min_scale
    return model


def exact_log_px(model, x):
    """x = W z + b + sigma eps, z ~ N(0, I)  =>  x ~ N(b, W W^T + sigma^2 I)."""
    lin = model.decoder[0]
    sigma = torch.nn.functional.softplus(model.raw_scale) + model.min_scale
    cov = lin.weight @ lin.weight.T + torch.diag(sigma ** 2)
    return MultivariateNormal(lin.bias, covariance_matrix=cov).log_prob(x)


def test_importance_sampled_log_px_matches_exact_value():
    model = linear_gaussian_vae()
    x = torch.randn(16, 6) * 0.5
    exact = exact_log_px(model, x).detach()
    torch.manual_seed(0)
    with torch.no_grad():
        estimates = torch.stack([log_likelihood(model, x, 2000, 300) for _ in range(5)])  # [R, B]
        elbos = model.elbo(x, 2000)
    # both are lower bounds in expectation; the 2000-sample estimate is close to exact
    assert bool((elbos < exact + 1e-3).all())
    err = (estimates.mean(0) - exact).abs()
    spread = estimates.std(0) / math.sqrt(estimates.shape[0])
    assert bool((err < 4 * spread + 0.02).all()), (err, spread)


def test_chunking_keeps_the_estimate():
    """Chunks combine by log-sum-exp: a deterministic stand-in for log_weights checks it exactly."""
    class Fixed:
        def __init__(self):
            self.weights = torch.randn(10, 3) * 5
            self.used = 0

        def log_weights(self, x, k):
            out = self.weights[self.used:self.used + k]
            self.used += k
            return out

    model = Fixed()
    chunked = log_likelihood(model, torch.zeros(3, 1), 10, 3)
    torch.testing.assert_close(chunked, log_mean_exp(model.weights))


def test_bernoulli_log_prob_equals_torch_bernoulli():
    from torch.distributions import Bernoulli
    from vaekit.models.vae import BernoulliLogits
    logits = torch.cat([torch.randn(4, 50) * 10, torch.tensor([[-80.0, -20.0, 0.0, 20.0, 80.0] * 10])])
    x = torch.bernoulli(torch.full((5, 50), 0.5))
    torch.testing.assert_close(BernoulliLogits(logits=logits).log_prob(x), Bernoulli(logits=logits).log_prob(x))


def test_vae_rejects_unknown_likelihood_and_activation():
    with pytest.raises(ValueError, match="likelihood"):
        VAE(4, [3], 2, "tanh", "poisson")
    with pytest.raises(ValueError, match="activation"):
        VAE(4, [3], 2, "swishy")


# -----------------------------------------------------------------------------
# the convolutional VAE (the GAN family's DCGAN networks)

def conv_vae(likelihood="bernoulli", seed=0):
    torch.manual_seed(seed)
    return VAE(64, [], 3, likelihood=likelihood, architecture="conv", image_shape=(1, 8, 8), width=4).eval()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_conv_vae_shapes_and_the_bounds_order(likelihood):
    model = conv_vae(likelihood)
    x = data_for(model)
    assert model.log_weights(x, 5).shape == (5, 7) and model.decode_mean(torch.randn(4, 3)).shape == (4, 64)
    assert model.likelihood(torch.randn(5, 7, 3)).batch_shape == (5, 7)  # K samples folded into the batch
    with torch.no_grad():
        elbo_value = float(model.elbo(x, 200).mean())
        log_px = float(log_likelihood(model, x, 2000, 500).mean())
    assert elbo_value < log_px


def test_conv_vae_decoder_is_the_gan_generator():
    from vaekit.models.gan import GAN
    vae = VAE(784, [], 64, architecture="conv", image_shape=(1, 28, 28), width=32)
    gan = GAN(784, (1, 28, 28), latent=64, architecture="conv", width=32)
    assert {k: v.shape for k, v in vae.decoder.net.state_dict().items()} == \
        {k: v.shape for k, v in gan.generator.state_dict().items()}


def test_conv_vae_needs_an_image_shape_and_image_data(tmp_path, capsys):
    import numpy as np
    from vaekit.cli import main
    with pytest.raises(ValueError, match="image_shape"):
        VAE(64, [], 3, architecture="conv")
    with pytest.raises(ValueError, match="architecture"):
        VAE(64, [], 3, architecture="transformer")
    flat = tmp_path / "flat.npz"  # rows of 10 values: no image to convolve
    np.savez(flat, train=np.ones((20, 10), np.float32), test=np.zeros((5, 10), np.float32))
    assert main(["train", "--model", "vae", "--data", "npy", "--set", f"data.path={flat}", "--set",
                 "vae.architecture=conv", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]) == 2
    assert "vae.architecture: 'conv' needs image data" in capsys.readouterr().err


def test_conv_vae_trains_on_digits_from_the_cli(tmp_path):
    import json
    from vaekit.cli import main
    run = tmp_path / "conv"
    assert main(["run", "--model", "vae", "--preset", "dcgan", "--set", "vae.width=8", "--data", "digits",
                 "--epochs", "4", "--no-progress", "--device", "cpu", "--set", "eval.num_samples=50",
                 "--out", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test/elbo"] > rows[0]["test/elbo"] + 5
    assert json.loads((run / "eval.json").read_text())["results"]["nll"]["value"] < -rows[-1]["test/elbo"] + 1


def gradients(model, x, bound, draws: int) -> torch.Tensor:
    """draws independent gradients of bound(model, x).sum(), each flattened over every parameter: [draws, P]."""
    rows = []
    for _ in range(draws):
        model.zero_grad()
        bound(model, x).sum().backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(rows)


def test_dreg_is_the_iwae_gradient_in_expectation_with_less_variance_for_the_encoder():
    from vaekit.objectives import iwae_dreg
    torch.manual_seed(0)
    model = VAE(4, [8], 2).double()
    x = (torch.rand(3, 4, dtype=torch.float64) < 0.5).double()
    k = 10
    standard = gradients(model, x, lambda m, x: iwae_bound(m.log_weights(x, k)), 3000)
    dreg = gradients(model, x, lambda m, x: iwae_dreg(x, m.posterior(x), m.prior(), m.likelihood, k), 3000)
    value = iwae_dreg(x, model.posterior(x), model.prior(), model.likelihood, k)
    assert value.shape == (3,) and torch.all(value < 0)  # the bound itself, as the value
    se = ((standard.var(0) + dreg.var(0)) / 3000).sqrt()
    assert torch.all((standard.mean(0) - dreg.mean(0)).abs() <= 5 * se + 1e-9)
    encoder = torch.cat([torch.full((p.numel(),), name.startswith("encoder")) for name, p in model.named_parameters()])
    assert dreg.var(0)[encoder].sum() < 0.5 * standard.var(0)[encoder].sum()


@pytest.mark.parametrize("kind", ["bottom-up", "top-down"])
def test_dreg_for_a_chain_of_layers_is_the_iwae_gradient_in_expectation(kind):
    """For a q(z|x) of several layers DReG holds q's parameters fixed in log q while each layer's draw keeps
    its path through the layers below (vaekit.families.latent.held_posterior): still unbiased."""
    from vaekit.families.latent import held_posterior
    from vaekit.models.hvae import HierarchicalVAE
    from vaekit.models.topdown import TopDownVAE
    from vaekit.objectives import iwae_dreg
    torch.manual_seed(0)
    model = (HierarchicalVAE(4, [[6], [4]], [2, 2]) if kind == "bottom-up" else TopDownVAE(4, [2, 2], width=6)).double()
    x = (torch.rand(3, 4, dtype=torch.float64) < 0.5).double()
    k, draws = 5, 2000
    standard = gradients(model, x, lambda m, x: iwae_bound(m.log_weights(x, k)), draws)
    dreg = gradients(model, x, lambda m, x: iwae_dreg(x, m.posterior(x), m.prior(), m.likelihood, k,
                                                      held_posterior(m, x)), draws)
    se = ((standard.var(0) + dreg.var(0)) / draws).sqrt()
    assert torch.all((standard.mean(0) - dreg.mean(0)).abs() <= 5 * se + 1e-9)


def test_dreg_trains_through_the_cli_and_is_refused_where_it_does_not_apply(tmp_path, capsys):
    from vaekit.cli import main
    dreg = ["--objective", "iwae", "--train-samples", "5", "--set", 'train.gradient="dreg"', "--epochs", "1",
            "--data", "digits", "--device", "cpu", "--no-progress", "--set", "eval.num_samples=20"]
    assert main(["run", *dreg, "--out", str(tmp_path / "vae")]) == 0
    assert main(["run", *dreg, "--model", "hvae", "--out", str(tmp_path / "hvae")]) == 0  # q: a chain of layers
    assert main(["run", "--data", "digits", "--set", 'train.gradient="dreg"', "--out", str(tmp_path / "elbo")]) == 2
    assert "gradient of the IWAE bound" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["vae", "bottom-up", "top-down"])
def test_compiled_evaluation_draws_the_same_samples_as_the_eager_one(kind):
    """eval.compile fuses the element-wise work of the log weights but keeps the eager random draws
    (vaekit.evaluate.weights_function): every per-example figure equals the eager evaluation's to float
    rounding, not merely within Monte Carlo error."""
    from vaekit.config import EvalConfig
    from vaekit.evaluate import evaluate
    from vaekit.models.hvae import HierarchicalVAE
    from vaekit.models.topdown import TopDownVAE
    torch.manual_seed(0)
    model = {"vae": lambda: VAE(12, [8], 3), "bottom-up": lambda: HierarchicalVAE(12, [[8], [6]], [3, 2]),
             "top-down": lambda: TopDownVAE(12, [3, 2], width=8)}[kind]()
    x = (torch.rand(10, 12) < 0.4).float()
    cfg = EvalConfig(num_samples=60, chunk_size=30, batch_size=5, iwae_samples=[30], elbo_samples=2)
    eager = evaluate(model, x, cfg, progress=False)
    compiled = evaluate(model, x, replace(cfg, compile=True), progress=False)
    for name in ("nll", "elbo", "iwae_30"):
        assert compiled[name] == pytest.approx(eager[name], abs=1e-4), name
    # a different eval seed moves the estimate: the equality above is not two constant outputs
    assert evaluate(model, x, replace(cfg, seed=7), progress=False)["nll"] != pytest.approx(eager["nll"], abs=1e-4)
