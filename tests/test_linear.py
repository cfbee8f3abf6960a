"""The linear-Gaussian generator as an oracle: exact log p(x) and posterior against every estimator."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal

from vaekit.evaluate import log_likelihood
from vaekit.models.linear import LinearGaussian
from vaekit.objectives import (elbo_analytic_kl, elbo_entropy, elbo_from_posterior, elbo_monte_carlo,
                               iwae_bound)


pytestmark = pytest.mark.usefixtures("float64")  # the oracles compare to tight tolerances


def random_model(d, k, noise="fa", seed=0):
    torch.manual_seed(seed)
    model = LinearGaussian(d, k, noise)
    with torch.no_grad():
        model.loc.normal_()
        if noise != "none":
            model.raw_scale.uniform_(-1.0, 1.0)
    return model


def approximate_posterior(model, x, seed=1):
    """A mean-field q near the exact posterior: mean shifted by half a posterior standard deviation,
    diagonal scale inflated by 30 % (no correlations)."""
    post = model.posterior(x)
    g = torch.Generator().manual_seed(seed)
    scale = post.variance.sqrt()
    mean = post.mean + 0.5 * scale * torch.randn(post.mean.shape, generator=g)
    scale = scale * 1.3
    return MultivariateNormal(mean, scale_tril=torch.diag_embed(scale))


def brute_force_log_px(model, x):
    cov = model.weight @ model.weight.T + torch.diag(model.noise_variance())
    return MultivariateNormal(model.loc, covariance_matrix=cov).log_prob(x)


SIZES = [(5, 2, "ppca"), (12, 3, "fa"), (784, 20, "ppca"), (784, 20, "fa")]


@pytest.mark.parametrize("d, k, noise", SIZES)
def test_exact_log_px_and_posterior(d, k, noise):
    model = random_model(d, k, noise)
    x = model.sample(6).detach()
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), brute_force_log_px(model, x), rtol=1e-9, atol=1e-7)
        # Bayes: log p(z|x) = log p(x|z) + log p(z) - log p(x), at any z
        z = torch.randn(6, k)
        lhs = model.posterior(x).log_prob(z)
        rhs = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - model.log_prob(x)
        torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-6)
        # the exact posterior makes every importance weight equal log p(x)
        torch.testing.assert_close(model.log_weights(x, 4), model.log_prob(x).expand(4, -1), rtol=1e-9, atol=1e-6)


def test_ppca_posterior_is_tipping_bishop():
    model = random_model(7, 3, "ppca")
    x = model.sample(5).detach()
    sigma2 = model.noise_variance()[0]
    m = model.weight.T @ model.weight + sigma2 * torch.eye(3)
    with torch.no_grad():
        post = model.posterior(x)
        torch.testing.assert_close(post.mean, torch.linalg.solve(m, model.weight.T @ (x - model.loc).T).T)
        torch.testing.assert_close(post.covariance_matrix[0], sigma2 * torch.linalg.inv(m))


@pytest.mark.parametrize("d, k, noise", SIZES)
def test_elbo_forms_agree(d, k, noise):
    """(a), (b), (c) agree within 4 standard errors; (d) equals the closed-form (a) to float tolerance."""
    model = random_model(d, k, noise)
    x = model.sample(4).detach()
    num_samples = 4000
    with torch.no_grad():
        q = approximate_posterior(model, x)
        prior, lik = model.prior(), model.likelihood
        estimates = {name: form(x, q, prior, lik, num_samples)
                     for name, form in [("a", elbo_analytic_kl), ("b", elbo_monte_carlo), ("c", elbo_entropy)]}
        exact_a = model.expected_log_likelihood(x, q) - torch.distributions.kl_divergence(q, prior)
        d_form = elbo_from_posterior(model.log_prob(x), q, model.posterior(x))
    torch.testing.assert_close(d_form, exact_a, rtol=1e-9, atol=1e-6)
    for name, per_sample in estimates.items():
        stderr = per_sample.std(0) / math.sqrt(num_samples)
        assert bool(((per_sample.mean(0) - exact_a).abs() < 4 * stderr + 1e-9).all()), name
    assert bool((d_form < model.log_prob(x)).all())  # a strict lower bound for an inexact q


def test_iwae_rises_with_k_to_exact_log_px():
    model = random_model(784, 20, "ppca", seed=3)
    x = model.sample(8).detach()
    with torch.no_grad():
        exact = model.log_prob(x)
        q = approximate_posterior(model, x, seed=2)
        repeats = 200
        bounds = {}
        for k in (1, 10, 100, 1000):
            draws = torch.stack([iwae_bound(model.log_weights(x, k, q=q)) for _ in range(repeats // (1 + k // 100))])
            bounds[k] = (draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0]))
    means = [bounds[k][0].mean() for k in (1, 10, 100, 1000)]
    assert all(a < b for a, b in zip(means, means[1:])), means
    mean, stderr = bounds[1000]
    assert bool(((mean - exact).abs() < 4 * stderr + 0.05).all()), (mean - exact, stderr)


def test_importance_sampled_nll_matches_exact():
    """vaekit's evaluator (chunked log-sum-exp) against the exact log p(x) of a linear-Gaussian model."""
    model = random_model(30, 4, "fa", seed=5)
    x = model.sample(16).detach()

    class WithProposal:  # the evaluator only needs log_weights
        def log_weights(self, xb, k):
            return model.log_weights(xb, k, q=approximate_posterior(model, xb, seed=7))

    with torch.no_grad():
        runs = torch.stack([log_likelihood(WithProposal(), x, 5000, 700) for _ in range(4)])
        exact = model.log_prob(x)
    stderr = runs.std(0) / 2
    assert bool(((runs.mean(0) - exact).abs() < 4 * stderr + 0.01).all())


def test_ppca_fit_matches_sklearn_pca_score():
    from sklearn.decomposition import PCA
    truth = random_model(10, 3, "ppca", seed=4)
    x = truth.sample(5000).detach()
    fitted = LinearGaussian.fit_ppca(x, 3)
    pca = PCA(n_components=3).fit(x.numpy())
    with torch.no_grad():
        ours = float(fitted.log_prob(x).mean())
        assert ours == pytest.approx(pca.score(x.numpy()), rel=1e-3)
        # maximum likelihood: no nearby model does better
        fitted.weight.add_(0.01 * torch.randn_like(fitted.weight))
        assert float(fitted.log_prob(x).mean()) < ours


def test_direct_generator_maps_standard_normal_to_n_mu_llt():
    model = random_model(3, 3, "none", seed=6)
    torch.manual_seed(0)
    x = model.sample(200_000).detach()
    cov = (model.weight @ model.weight.T).detach()
    torch.testing.assert_close(x.mean(0), model.loc.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov.detach(), atol=0.05 * float(cov.abs().max()), rtol=0)
    assert torch.isfinite(model.log_prob(x[:5])).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        LinearGaussian(4, 2, "student")
    with pytest.raises(ValueError, match="latent == data_dim"):
        LinearGaussian(4, 2, "none")
    with pytest.raises(ValueError, match="latent"):
        LinearGaussian.fit_ppca(torch.randn(10, 4), 4)


def test_posterior_contours_of_the_linear_model_coincide(tmp_path, monkeypatch):
    """On the picture's grid, log p(x, z) - log p(z|x) = log p(x): the same for every z."""
    from vaekit import pictures, plots
    model = random_model(9, 2, "fa", seed=8)
    x = model.sample(3).detach()
    seen = {}
    monkeypatch.setattr(plots, "plot_posterior_contours",
                        lambda z1, z2, lp, lq, path: seen.update(z1=z1, lp=lp, lq=lq) or path)
    pictures.posterior_contours(model, x, tmp_path / "p.png", grid_size=20)
    assert seen["lp"].shape == (3, 20, 20) and seen["z1"].shape == (3, 20)
    with torch.no_grad():
        offset = (seen["lp"] - seen["lq"]).flatten(1)  # [P, G*G]
        torch.testing.assert_close(offset, model.log_prob(x)[:, None].expand_as(offset), rtol=1e-9, atol=1e-6)


def test_vae_with_linear_decoder_reaches_the_ppca_optimum(tmp_path):
    """Lucas et al. 2019: a VAE with a linear Gaussian decoder trained on PPCA data reaches the PPCA
    maximum likelihood, and its ELBO becomes tight. Trained through vaekit's loop on a .npz data set."""
    from vaekit import config as configlib
    from vaekit.train import Trainer

    torch.set_default_dtype(torch.float32)  # training runs in float32, as users run it
    torch.manual_seed(0)
    truth = LinearGaussian(16, 3, "ppca").double()
    with torch.no_grad():  # centred at 0.5 with a small spread: the data stay inside [0, 1]
        truth.loc.fill_(0.5)
        truth.weight.mul_(0.05)
        truth.raw_scale.fill_(-3.9)  # sigma ~ 0.02 + min_scale
        x = truth.sample(4000).float()
    assert 0 < float(x.min()) and float(x.max()) < 1
    np.savez(tmp_path / "ppca.npz", train=x[:3000].numpy(), test=x[3000:].numpy())
    cfg = configlib.from_dict({
        "data": {"name": "npy", "path": str(tmp_path / "ppca.npz"), "binarization": "none"},
        "vae": {"hidden": [], "latent": 3, "likelihood": "gaussian", "min_scale": 1e-4},
        "train": {"epochs": 300, "batch_size": 100, "lr": 1e-2, "progress": False, "device": "cpu"},
        "out": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    train_x = trainer.data.train.x.double()
    with torch.no_grad():
        ppca_ml = float(LinearGaussian.fit_ppca(train_x, 3).log_prob(train_x).mean())
        gap_before = float((vae_exact_log_px(trainer.model, train_x) - trainer.model.elbo(train_x.float(), 50)).mean())
    trainer.fit()
    with torch.no_grad():
        vae_log_px = float(vae_exact_log_px(trainer.model, train_x).mean())
        gap_after = float((vae_exact_log_px(trainer.model, train_x) - trainer.model.elbo(train_x.float(), 50)).mean())
    assert vae_log_px > ppca_ml - 0.5, (vae_log_px, ppca_ml, gap_before, gap_after)
    assert gap_after < 0.5 and gap_after < gap_before / 2, (gap_before, gap_after)


def vae_exact_log_px(model, x):
    """log p(x) of a VAE whose decoder is one Linear layer: N(b, W W^T + diag(scale^2)), in float64."""
    lin = model.decoder[0]
    w, b = lin.weight.double(), lin.bias.double()
    scale = (torch.nn.functional.softplus(model.raw_scale) + model.min_scale).double()
    return LowRankMultivariateNormal(b, cov_factor=w, cov_diag=scale ** 2).log_prob(x)


def test_vae_with_linear_gaussian_decoder_has_exact_forms():
    """A VAE whose decoder is one Linear layer with Gaussian noise is a factor-analysis model: its exact
    log p(x) and posterior give form (d), which equals the closed-form (a) for the encoder's q."""
    from torch.distributions import kl_divergence
    from vaekit.gap import gap_report
    from vaekit.models import VAE
    torch.manual_seed(0)
    vae = VAE(10, [], 3, "tanh", "gaussian").double()
    assert VAE(10, [8], 3, "tanh", "gaussian").as_linear_gaussian() is None
    assert VAE(10, [], 3, "tanh", "bernoulli").as_linear_gaussian() is None
    exact = vae.as_linear_gaussian()
    x = torch.randn(5, 10)
    with torch.no_grad():
        q_diag = vae.posterior(x)
        q = MultivariateNormal(q_diag.mean, scale_tril=torch.diag_embed(q_diag.stddev))
        form_a = exact.expected_log_likelihood(x, q) - kl_divergence(q, exact.prior())
        form_d = elbo_from_posterior(exact.log_prob(x), q, exact.posterior(x))
        torch.testing.assert_close(form_d, form_a, rtol=1e-9, atol=1e-8)
        mc = vae.elbo(x, 100_000)  # the VAE's own (a), by Monte Carlo
    torch.testing.assert_close(mc, form_a, rtol=0, atol=0.1)
    report = gap_report(vae, x, amortisation=False)
    assert report["log_px_estimator"] == "exact"
    assert report["log_px"]["mean"] == pytest.approx(float(exact.log_prob(x).detach().mean()))
