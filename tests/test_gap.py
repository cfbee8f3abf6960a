"""The gap report against exact answers: a VAE with a linear Gaussian decoder has a known log p(x)."""

import math

import torch
from torch.distributions import MultivariateNormal

from vaekit.cli import main
from vaekit.gap import active_units, gap_report, kl_per_dimension
from vaekit.models import VAE


def linear_decoder_vae(seed=0):
    """A VAE whose decoder is x = W z + b + sigma eps with orthogonal columns of W: the exact posterior
    is then a diagonal Gaussian, so the best per-point diagonal q closes the approximation gap."""
    torch.manual_seed(seed)
    model = VAE(6, [], 2, "tanh", "gaussian")
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(6, 2))
        model.decoder[0].weight.copy_(q * torch.tensor([2.0, 1.0]))
        model.decoder[0].bias.normal_()
        model.raw_scale.fill_(0.0)  # sigma = softplus(0) + min_scale
    return model


def exact_log_px(model, x):
    lin = model.decoder[0]
    sigma = torch.nn.functional.softplus(model.raw_scale) + model.min_scale
    return MultivariateNormal(lin.bias, covariance_matrix=lin.weight @ lin.weight.T + torch.diag(sigma ** 2)).log_prob(x)


def test_gap_splits_into_approximation_and_amortisation():
    model = linear_decoder_vae()
    x = (model.decoder[0].bias + torch.randn(64, 6)).detach()
    torch.manual_seed(1)
    with torch.no_grad():
        exact_per_point = exact_log_px(model, x)
    exact = float(exact_per_point.mean())
    # a linear Gaussian decoder: vaekit finds the exact log p(x) by itself
    report = gap_report(model, x, elbo_samples=200, optimise_steps=800)
    assert report["log_px_estimator"] == "exact"
    assert math.isclose(report["log_px"]["mean"], exact, rel_tol=1e-6)
    given = gap_report(model, x, amortisation=False, log_px=exact_per_point + 1.0)
    assert given["log_px_estimator"] == "given" and math.isclose(given["log_px"]["mean"], exact + 1.0, rel_tol=1e-6)
    # a random encoder leaves a clear gap; it is all amortisation, since q* reaches the exact posterior
    assert report["gap"]["mean"] > 0.5
    assert abs(report["approximation_gap"]["mean"]) < 0.05
    total = report["approximation_gap"]["mean"] + report["amortisation_gap"]["mean"]
    assert math.isclose(total, report["gap"]["mean"], abs_tol=1e-5)
    # ELBO = E_q[log p(x,z)] + H(q), and the IWAE bounds climb towards log p(x)
    assert abs(report["expected_log_joint"]["mean"] + report["entropy"]["mean"] - report["elbo"]["mean"]) < 0.1
    iwae = [v["mean"] for v in report["iwae"].values()]
    assert iwae[0] < iwae[1] < iwae[2] <= exact + 0.01


def test_active_units_and_kl_per_dimension():
    torch.manual_seed(0)
    model = VAE(8, [16], 3, "tanh")
    with torch.no_grad():
        model.encoder[-1].weight[1].zero_()  # latent 1: its mean no longer depends on x
        model.encoder[-1].bias[1] = 0.0
    x = torch.bernoulli(torch.full((400, 8), 0.5))
    units = active_units(model, x)
    assert units["of"] == 3 and units["variance"][1] == 0.0 and units["active"] <= 2
    kl = kl_per_dimension(model, x)
    with torch.no_grad():
        total = torch.distributions.kl_divergence(model.posterior(x), model.prior()).mean()
    assert len(kl) == 3 and math.isclose(sum(kl), float(total), rel_tol=1e-5)


def test_evaluate_gap_command(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--hidden", "16", "--latent", "2", "--epochs", "1", "--no-progress", "--device", "cpu",
                 "--out", str(run_dir)]) == 0
    assert main(["evaluate", str(run_dir), "--gap", "--gap-examples", "20", "--num-samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "approximation" in out and "amortisation" in out and (run_dir / "gap.json").is_file()
    assert main(["evaluate", str(run_dir), "--gap", "--gap-examples", "0"]) == 2
