"""The hierarchical VAEs (L stochastic layers with bottom-up inference; the top-down hierarchy): their log
weights are those of one joint q(z|x) and p(z), their KL splits into the layers' rates, and a linear-
Gaussian special case of the two-layer model has the exact log p(x) of the equivalent linear-Gaussian
model."""

import json

import pytest
import torch
from torch.distributions import MultivariateNormal

from conftest import tiny_run
from vaekit import config as configlib
from vaekit.cli import main
from vaekit.models.hvae import HierarchicalVAE
from vaekit.models.topdown import TopDownVAE
from vaekit.models.vae import LatentVariableBase
from vaekit.objectives import iwae_bound
from vaekit.train import Trainer


MODELS = {
    "bottom-up": lambda likelihood: HierarchicalVAE(12, [[16], [8], [6]], [5, 3, 2], likelihood=likelihood),
    "top-down": lambda likelihood: TopDownVAE(12, [5, 3, 2], width=16, depth=1, likelihood=likelihood),
}


def model_and_data(likelihood="bernoulli", seed=0, kind="bottom-up"):
    torch.manual_seed(seed)
    model = MODELS[kind](likelihood).double()
    x = (torch.rand(40, 12, dtype=torch.float64) < 0.4).double()
    return model, x


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_weights_are_k_by_b_and_the_bounds_are_ordered(likelihood, kind):
    model, x = model_and_data(likelihood, kind=kind)
    assert model.log_weights(x, 7).shape == (7, 40)
    with torch.no_grad():
        elbo = model.elbo(x, 4000).mean()  # = IWAE_1 in expectation
        bounds = [torch.stack([iwae_bound(model.log_weights(x, k)) for _ in range(200)]).mean() for k in (1, 5, 50)]
    assert float(elbo) == pytest.approx(float(bounds[0]), abs=0.1)
    assert bounds[0] < bounds[1] < bounds[2]


@pytest.mark.parametrize("kind", MODELS)
def test_the_layers_kl_terms_sum_to_the_joint_kl_by_monte_carlo(kind):
    model, x = model_and_data(kind=kind)
    with torch.no_grad():
        _, kls = model.kl_terms(x, 4000)
        q, p = model.posterior(x), model.prior()
        z = q.sample((4000,))
        joint = q.log_prob(z) - p.log_prob(z)  # [K, B]
    per_example = joint.mean(0)
    stderr = joint.std(0) / 4000 ** 0.5
    assert len(kls) == 3 and all(float(k.mean()) > 0 for k in kls)
    assert torch.all((sum(kls) - per_example).abs() <= 4 * stderr * 2 ** 0.5)


def linear_gaussian_special_case(seed=0):
    """Two layers with linear conditionals and constant scales: z2 ~ N(0, I), z1 = A z2 + a + e1,
    x = W z1 + w + e2, so x ~ N(W a + w, W (A A^T + S1) W^T + S2) exactly."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(4, [[], []], [3, 2], likelihood="gaussian").double()
    down = model.down[0].net[0]  # [z2] -> [loc(3), raw scale(3)]
    with torch.no_grad():
        down.weight[3:] = 0  # the scale of p(z1|z2) does not depend on z2
        model.raw_scale.uniform_(-1.0, 0.0)
    a, A = down.bias[:3], down.weight[:3]
    s1 = torch.nn.functional.softplus(down.bias[3:]) + model.min_scale
    W, w = model.decoder[0].weight, model.decoder[0].bias
    s2 = torch.nn.functional.softplus(model.raw_scale) + model.min_scale
    cov = W @ (A @ A.T + torch.diag(s1 ** 2)) @ W.T + torch.diag(s2 ** 2)
    return model, MultivariateNormal(W @ a + w, cov)


def test_a_linear_gaussian_special_case_has_the_exact_log_likelihood():
    model, exact = linear_gaussian_special_case()
    x = exact.sample((30,)).detach()
    encoder = torch.optim.Adam(model.up.parameters(), lr=0.02)  # a fitted q: IS converges within K draws
    for _ in range(300):
        encoder.zero_grad()
        (-iwae_bound(model.log_weights(x, 10)).mean()).backward()
        encoder.step()
    with torch.no_grad():
        from vaekit.evaluate import log_likelihood
        estimate = log_likelihood(model, x, 20000, 5000)
    assert torch.allclose(estimate, exact.log_prob(x).detach(), atol=0.05)


@pytest.mark.parametrize("family, preset", [("hvae", "burda2"), ("topdown", "ladder")])
def test_the_preset_trains_evaluates_and_draws_through_the_cli(tmp_path, family, preset):
    out = tmp_path / "run"
    assert main(["run", "--model", family, "--preset", preset, "--data", "digits", "--epochs", "2",
                 "--set", "eval.num_samples=50", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads((out / "eval.json").read_text())
    assert record["results"]["kl"]["side"] == "estimate"  # Monte Carlo: no closed form for the chain
    assert record["results"]["elbo"]["value"] <= -record["results"]["nll"]["value"] + 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"test/kl_1", "test/kl_2"} <= set(rows[-1])
    assert main(["train", "--resume", str(out), "--epochs", "3", "--set", "train.kl_warmup_steps=30",
                 "--no-progress"]) == 2  # a KL warm-up changes what is optimised: another run
    assert (out / "pictures" / "samples.png").is_file()
    assert main(["evaluate", str(out), "--gap", "--gap-examples", "50", "--no-progress"]) == 0
    gap = json.loads((out / "gap.json").read_text())
    parts = gap["expected_log_joint"]["mean"] + gap["entropy"]["mean"]  # E_q[log p(x,z)] + H(q) = ELBO
    assert parts == pytest.approx(gap["elbo"]["mean"], abs=4 * gap["elbo"]["stderr"])
    assert gap["gap"]["mean"] > 0 and "amortisation_gap" not in gap  # q is a chain: no per-point q* of its family


@pytest.mark.parametrize("family, settings", [
    ("hvae", {"latents": [4, 2], "hidden": [[16], [8]], "init": "glorot", "output_bias": "data"}),  # burda2's start
    ("topdown", {"latents": [4, 2], "width": 16, "output_bias": "data"})])
def test_resume_is_bit_exact(tmp_path, family, settings):
    # a KL warm-up and free bits too: the warm-up's weight is a function of the step alone
    values = tiny_run(tmp_path, train={"epochs": 3, "lr_schedule": "constant", "kl_warmup_steps": 40,
                                       "free_bits": 0.1})  # the cut run's plan: 2 epochs
    del values["vae"]
    values.update(model={"name": family}, **{family: settings})
    full = Trainer(configlib.from_dict({**values, "out": str(tmp_path / "full")}))
    full.fit()
    cut = Trainer(configlib.from_dict({**values, "out": str(tmp_path / "cut"), "train": {**values["train"], "epochs": 2}}))
    cut.fit()
    resumed = Trainer(configlib.from_dict({**values, "out": str(tmp_path / "cut")}), resume=True)
    resumed.fit()
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


@pytest.mark.parametrize("kind", MODELS)
def test_the_log_density_of_a_draw_is_the_same_from_its_kept_conditionals_and_recomputed(kind):
    model, x = model_and_data(kind=kind)
    for chain, shape in ((model.posterior(x), (3,)), (model.prior(), (3, 40))):
        z = chain.rsample(shape)
        kept, recomputed = chain.log_prob(z), chain.log_prob(z.clone())  # a clone is another tensor
        assert kept.shape == (3, 40) and torch.allclose(kept, recomputed)


def test_the_top_down_pass_gives_the_log_weights_of_its_distributions():
    """TopDownVAE.log_weights takes one joint pass; the definition through q = posterior(x), p = prior()
    and the likelihood, each walking the top-down path on its own, must give the same numbers from the
    same draws."""
    model, x = model_and_data(kind="top-down")
    torch.manual_seed(1)
    one_pass = model.log_weights(x, 6)
    torch.manual_seed(1)
    by_definition = LatentVariableBase.log_weights(model, x, 6)
    assert one_pass.shape == (6, 40) and torch.allclose(one_pass, by_definition)
    z = model.prior().sample((5,))  # the prior's draws decode through the same path
    assert z.shape == (5, 10) and model.likelihood(z).mean.shape == (5, 12)


def test_a_top_down_posterior_starts_as_its_prior_plus_a_learned_correction():
    model, x = model_and_data(kind="top-down")
    for group in model.groups:
        torch.nn.init.zeros_(group.delta[-1].weight)
        torch.nn.init.zeros_(group.delta[-1].bias)
    with torch.no_grad():
        _, kls = model.kl_terms(x, 3)
    assert all(torch.allclose(k, torch.zeros_like(k)) for k in kls)  # q = p exactly: no rate
