"""AIS with HMC over a decoder's latents (vaekit.decoder_ais) against exact answers: the linear-Gaussian
log p(x) and posterior, and 2-D quadrature for nonlinear decoders (a VAE's, a GAN's with an observation
model and a categorical code)."""

import json
import math
from pathlib import Path

import pytest
import torch

from vaekit import config as configlib
from vaekit import decoder_ais
from vaekit.cli import main
from vaekit.config import EvalConfig
from vaekit.models.gan import GAN
from vaekit.models.linear import LinearGaussian
from vaekit.models.vae import VAE
from vaekit.train import Trainer

from conftest import tiny_run


pytestmark = pytest.mark.usefixtures("float64")  # the oracles compare to tight tolerances


def settings(**values) -> EvalConfig:
    base = dict(decoder_ais_steps=100, decoder_ais_chains=8, hmc_leapfrog=5, batch_size=100, bdmc_examples=0)
    return EvalConfig(**{**base, **values})


def linear_model(d=5, k=2, seed=0) -> LinearGaussian:
    torch.manual_seed(seed)
    model = LinearGaussian(d, k, "fa")
    with torch.no_grad():
        model.loc.normal_()
        model.raw_scale.uniform_(-1.5, -0.5)  # noise scales ~0.2-0.5: a posterior narrower than the prior
    return model


def quadrature_log_px(model, x: torch.Tensor, radius: float = 6.0, points: int = 241) -> torch.Tensor:
    """log p(x) = log sum_grid p(z) p(x|z) dz on a square grid over a 2-D latent. x [B, D] -> [B]."""
    axis = torch.linspace(-radius, radius, points)
    z = torch.cartesian_prod(axis, axis)  # [G, 2]
    cell = math.log((axis[1] - axis[0]) ** 2)
    with torch.no_grad():
        log_prior, likelihood = model.prior().log_prob(z), model.likelihood(z)
        log_joint = torch.stack([log_prior + likelihood.log_prob(xb) for xb in x], 1)  # [G, B]
    return torch.logsumexp(log_joint, 0) + cell


def assert_within(estimate: torch.Tensor, exact: torch.Tensor, sigmas: float = 3.0):
    """The mean difference is within `sigmas` standard errors (of the paired differences) of zero."""
    diff = (estimate - exact).double()
    stderr = float(diff.std() / math.sqrt(diff.numel()))
    assert abs(float(diff.mean())) <= sigmas * stderr + 1e-3, (float(diff.mean()), stderr)


def test_sigmoid_schedule_runs_from_zero_to_one_densest_at_the_ends():
    betas = decoder_ais.sigmoid_schedule(100)
    steps = betas.diff()
    assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 101 and bool((steps > 0).all())
    assert steps[0] < steps[50] and steps[-1] < steps[50]
    with pytest.raises(ValueError, match="num_steps"):
        decoder_ais.sigmoid_schedule(0)


def test_hmc_leaves_the_exact_posterior_invariant():
    """Chains started at exact posterior samples stay distributed as p(z|x) after 30 HMC transitions."""
    torch.manual_seed(1)
    model = linear_model()
    x = model.sample(1)
    with torch.no_grad():
        post = model.posterior(x)
    n = 4000
    xs, z = x.expand(n, -1), post.sample((n,))[:, 0]
    exact_sd = post.covariance_matrix[0].diagonal().sqrt()
    terms, eps = decoder_ais._terms(model, xs, z), torch.full((n,), 0.5 * float(exact_sd.min()))
    for _ in range(30):
        z, terms, accepted = decoder_ais.hmc_step(model, xs, z, 1.0, eps, 5, terms)
    assert 0.3 < float(accepted.double().mean()) < 1.0
    cov = torch.cov(z.T)
    assert torch.allclose(z.mean(0), post.mean[0], atol=float(4 * exact_sd.max() / math.sqrt(n)))
    assert torch.allclose(cov, post.covariance_matrix[0], atol=0.1 * float(exact_sd.max() ** 2))


def test_ais_equals_the_exact_log_likelihood_of_the_linear_gaussian():
    torch.manual_seed(2)
    model = linear_model()
    x = model.sample(30)
    out = decoder_ais.log_likelihood(model, x, settings())
    assert_within(out["log_px"], model.log_prob(x).detach())
    assert 0.3 < out["accept_rate"] < 1.0


def test_bdmc_brackets_the_exact_value_and_tightens_with_more_steps():
    """Forward AIS sits below log p(x), reverse AIS from the exact posterior sample above, in
    expectation; the gap shrinks as intermediate distributions are added."""
    torch.manual_seed(3)
    model = linear_model(d=8, k=3)
    gaps = []
    for steps in (3, 100):
        torch.manual_seed(4)
        out = decoder_ais.bdmc(model, settings(decoder_ais_steps=steps, bdmc_examples=40))
        gaps.append(float((out["upper"] - out["lower"]).mean()))
    assert gaps[0] > 0.3 and 0 <= gaps[1] < gaps[0] / 3, gaps


def test_bdmc_bounds_hold_against_the_exact_value():
    torch.manual_seed(5)
    model = linear_model(d=8, k=3)
    cfg = settings(decoder_ais_steps=10, bdmc_examples=60)
    x, z = decoder_ais.simulate(model, cfg.bdmc_examples, cfg.decoder_ais_chains)
    exact = model.log_prob(x).detach()
    lower = decoder_ais.log_likelihood(model, x, cfg)["log_px"]
    upper = decoder_ais.log_likelihood(model, x, cfg, init_z=z)["log_px"]
    # with 10 steps the bias dominates the noise: each side is off in its own direction
    assert float((lower - exact).mean()) < 0 < float((upper - exact).mean())


def test_ais_matches_quadrature_for_a_vae_decoder():
    """A random Bernoulli VAE with a 2-D latent: its decoder's log p(x) by a fine grid is the oracle."""
    torch.manual_seed(6)
    model = VAE(12, [16], 2, "tanh", "bernoulli")
    with torch.no_grad():
        model.decoder[-1].weight.mul_(3)  # a posterior well away from the prior
    x = torch.bernoulli(torch.full((20, 12), 0.3))
    out = decoder_ais.log_likelihood(model, x, settings(decoder_ais_steps=200))
    assert_within(out["log_px"], quadrature_log_px(model, x))


@pytest.mark.parametrize("categories", [0, 3])
def test_observed_generator_matches_quadrature(categories):
    """A GAN's MLP generator with a Gaussian observation model (and an InfoGAN code summed out)."""
    torch.manual_seed(7)
    gan = GAN(6, (1, 1, 6), latent=2, architecture="mlp", hidden=(16,), categories=categories).eval()
    model = decoder_ais.ObservedGenerator(gan, "gaussian", 0.15, categories)
    x = model.likelihood(model.prior().sample((20,))).sample()
    out = decoder_ais.log_likelihood(model, x, settings(decoder_ais_steps=200))
    assert_within(out["log_px"], quadrature_log_px(model, x))


def test_observed_generator_checks_its_arguments():
    gan = GAN(6, (1, 1, 6), latent=2, architecture="mlp", hidden=(16,))
    with pytest.raises(ValueError, match="observation"):
        decoder_ais.ObservedGenerator(gan, "laplace", 0.1)
    with pytest.raises(ValueError, match="scale"):
        decoder_ais.ObservedGenerator(gan, "gaussian")


def test_choose_scale_finds_the_noise_the_data_were_made_with():
    torch.manual_seed(8)
    gan = GAN(6, (1, 1, 6), latent=2, architecture="mlp", hidden=(16,)).eval()
    x = decoder_ais.ObservedGenerator(gan, "gaussian", 0.1).likelihood(torch.randn(40, 2)).sample()
    build = lambda s: decoder_ais.ObservedGenerator(gan, "gaussian", s)
    best, means = decoder_ais.choose_scale(build, x, settings(decoder_ais_steps=200,
                                                             observation_scales=[0.02, 0.1, 0.5]))
    assert best == 0.1 and means[0.1] > means[0.02] and means[0.1] > means[0.5]


def test_anneal_refuses_a_bad_schedule():
    model = linear_model()
    with pytest.raises(ValueError, match="betas"):
        decoder_ais.anneal(model, model.sample(2), torch.tensor([0.0, 0.7, 0.5, 1.0]), 2)


AIS_FLAGS = ["--ais", "--ais-steps", "20", "--ais-chains", "4", "--ais-examples", "6", "--bdmc-examples", "4",
             "--num-samples", "50", "--no-progress", "--device", "cpu"]
FAMILY_SECTIONS = {"vae": {}, "linear": {"linear": {"latent": 2}, "data": {"binarization": "none"}},
                   "rbm": {"rbm": {"num_hidden": 8}},
                   "gan": {"gan": {"width": 8, "latent": 4, "categories": 2}}}


def trained_run(tmp_path, family: str) -> Path:
    """A two-epoch digits run of the family, float32 as the command line trains."""
    torch.set_default_dtype(torch.float32)
    values = tiny_run(tmp_path, model={"name": family}, eval={"observation_scales": [0.1, 0.3],
                                                              "observation_examples": 4},
                      **FAMILY_SECTIONS[family])
    if family != "vae":
        del values["vae"]
    trainer = Trainer(configlib.from_dict(values))
    trainer.fit()
    return trainer.run_dir


@pytest.mark.parametrize("family, reference", [("linear", "ais_minus_exact"), ("vae", "ais_minus_is"),
                                               ("gan", "observation_scale")])
def test_evaluate_ais_on_every_decoder_family(tmp_path, family, reference, capsys):
    run = trained_run(tmp_path, family)
    assert main(["evaluate", str(run), *AIS_FLAGS]) == 0
    results = json.loads((run / "eval.json").read_text())["results"]
    for name in ("nll_ais", "ais_accept_rate", "bdmc_nll_forward", "bdmc_nll_reverse", "bdmc_gap", reference):
        assert name in results and math.isfinite(results[name]["value"]), name
    assert results["nll_ais"]["num_examples"] == 6 and "20 steps, 4 chains" in results["nll_ais"]["estimator"]
    assert "nll_ais" in capsys.readouterr().out


def test_evaluate_ais_refuses_a_model_without_a_decoder_before_evaluating(tmp_path, capsys):
    run = trained_run(tmp_path, "rbm")
    assert main(["evaluate", str(run), *AIS_FLAGS]) == 2
    assert "'rbm' family's model is not a decoder" in capsys.readouterr().err
    assert not (run / "eval.json").exists() or "nll_ais" not in (run / "eval.json").read_text()
