"""RBM oracles: conditionals and free energy against enumeration, AIS against the exact log Z."""

import math

import pytest
import torch

from vaekit.data import binarize, load_dataset
from vaekit.annealing import ais, ais_schedule, all_states, exact_log_partition, raise_log_prob
from vaekit.models.rbm import RBM, base_rate_bias, cd_loss, centre_gradients, update_offsets


def log_prob(rbm, v, log_z):
    """log p(v) = -F(v) - log Z."""
    return -rbm.free_energy(v) - log_z


def random_rbm(v, h, scale=1.0, seed=0):
    torch.manual_seed(seed)
    rbm = RBM(v, h)
    with torch.no_grad():
        rbm.weight.normal_(0, scale)
        rbm.visible_bias.normal_(0, scale)
        rbm.hidden_bias.normal_(0, scale)
    return rbm


def joint_table(rbm):
    """log exp(-E(v, h)) for every (v, h): [2^V, 2^H]."""
    vs, hs = all_states(rbm.num_visible), all_states(rbm.num_hidden)
    return -rbm.energy(vs[:, None, :].expand(-1, len(hs), -1), hs[None].expand(len(vs), -1, -1)), vs, hs


@torch.no_grad()
def test_conditionals_and_free_energy_match_enumeration():
    rbm = random_rbm(5, 4)
    log_joint, vs, hs = joint_table(rbm)
    # p(h|v) by enumeration vs the factorised conditional
    log_cond = log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)
    torch.testing.assert_close(log_cond, rbm.hidden_given_visible(vs[:, None, :]).log_prob(hs[None]), atol=1e-5, rtol=0)
    log_cond_v = log_joint - torch.logsumexp(log_joint, dim=0, keepdim=True)
    torch.testing.assert_close(log_cond_v, rbm.visible_given_hidden(hs[None]).log_prob(vs[:, None, :]), atol=1e-5, rtol=0)
    torch.testing.assert_close(-rbm.free_energy(vs), torch.logsumexp(log_joint, dim=1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("v, h", [(6, 4), (4, 7)])
@torch.no_grad()
def test_exact_log_z_both_ways(v, h):
    rbm = random_rbm(v, h, seed=v)
    log_joint, vs, _ = joint_table(rbm)
    brute = torch.logsumexp(log_joint.flatten(), 0)
    torch.testing.assert_close(exact_log_partition(rbm), brute, atol=1e-4, rtol=0)
    assert torch.allclose(torch.logsumexp(log_prob(rbm, vs, brute), 0), torch.tensor(0.0), atol=1e-5)


def test_exact_log_z_refuses_large_models():
    with pytest.raises(ValueError, match="use ais"):
        exact_log_partition(RBM(784, 500))


def exact_samples(rbm, n, seed=0):
    """Exact draws from p(v): h from its marginal by enumeration, then v | h."""
    g = torch.Generator().manual_seed(seed)
    hs = all_states(rbm.num_hidden)
    logits = hs @ rbm.hidden_bias + torch.nn.functional.softplus(hs @ rbm.weight.T + rbm.visible_bias).sum(-1)
    h = hs[torch.multinomial(torch.softmax(logits, 0), n, replacement=True, generator=g)]
    return torch.bernoulli(torch.sigmoid(h @ rbm.weight.T + rbm.visible_bias), generator=g)


def digits_binary():
    return binarize(load_dataset("digits")["train"].x, "static", torch.Generator().manual_seed(0))


def train_cd(rbm, v, steps, lr=0.05, k=1, persistent=False, seed=0, centering=0.0):
    """SGD on the CD surrogate (centred when centering > 0); rbm is re-initialised from `seed` so results
    do not depend on test order."""
    torch.manual_seed(seed)
    with torch.no_grad():
        rbm.weight.normal_(0, 0.01)
        rbm.visible_bias.zero_()
        rbm.hidden_bias.zero_()
    optimizer = torch.optim.SGD(rbm.parameters(), lr=lr, momentum=0.5)
    chains = v[:100].clone()
    for step in range(steps):
        batch = v[torch.randint(0, v.shape[0], (100,))]
        start = chains if persistent else batch
        if centering:
            update_offsets(rbm, batch, centering)
        negative = rbm.gibbs(start, k)
        chains = negative if persistent else chains
        optimizer.zero_grad()
        cd_loss(rbm, batch, negative).backward()
        if centering:
            centre_gradients(rbm)
        optimizer.step()
    return rbm


@pytest.mark.parametrize("persistent, centering", [(False, 0.0), (True, 0.0), (True, 0.01)])
def test_cd_and_pcd_raise_the_exact_log_likelihood(persistent, centering):
    v = digits_binary()[:, :16]  # a 16-pixel window of the digits: exact log Z by enumeration of 2^8 h
    rbm = RBM(16, 8)
    with torch.no_grad():
        before = float(log_prob(rbm, v, exact_log_partition(rbm)).mean())
    train_cd(rbm, v, 300, persistent=persistent, centering=centering)
    with torch.no_grad():
        after = float(log_prob(rbm, v, exact_log_partition(rbm)).mean())
    assert after > before + 1.0, (before, after)


@torch.no_grad()
def test_ais_brackets_the_exact_log_z_of_a_trained_digits_rbm():
    """64 x 15 trained on digits (Salakhutdinov & Murray's check, small enough to enumerate 2^15 h)."""
    v = digits_binary()
    with torch.enable_grad():
        rbm = train_cd(RBM(64, 15), v, 400, lr=0.1)
    exact = float(exact_log_partition(rbm))
    base = base_rate_bias(v)
    betas = torch.cat([torch.linspace(0, 0.5, 500), torch.linspace(0.5, 0.9, 1000)[1:], torch.linspace(0.9, 1, 1000)[1:]])
    torch.manual_seed(0)
    forward = ais(rbm, base, betas, num_runs=200)
    reverse = ais(rbm, base, betas, init_v=exact_samples(rbm, 200))
    assert abs(forward["log_z"] - exact) < 0.1, (forward["log_z"], exact)
    assert abs(reverse["log_z"] - exact) < 0.1, (reverse["log_z"], exact)
    assert forward["stderr"] < 0.1 and forward["log_w"].shape == (200,)


def centred_free_energy(v, weight, b_c, c_c, mu, lam):
    """F(v) of the centred energy -(v - mu)^T W (h - lambda) - b'^T (v - mu) - c'^T (h - lambda), h summed
    out by hand: -b'^T (v - mu) - sum_j [softplus(a_j) - lambda_j a_j], a = c' + (v - mu) W."""
    a = c_c + (v - mu) @ weight
    return -(v - mu) @ b_c - (torch.nn.functional.softplus(a) - lam * a).sum(-1)


def test_centred_gradient_is_the_gradient_in_centred_coordinates():
    """Oracle: autograd in the centred parametrisation (W, b' = b + W lambda, c' = c + W^T mu), mapped back
    to the standard parameters, equals centre_gradients applied to the plain CD gradient."""
    rbm = random_rbm(7, 5, scale=0.5, seed=2)
    torch.manual_seed(0)
    data, negative = torch.bernoulli(torch.full((20, 7), 0.3)), torch.bernoulli(torch.full((13, 7), 0.6))
    with torch.no_grad():
        rbm.visible_offset.uniform_(0.1, 0.9)
        rbm.hidden_offset.uniform_(0.1, 0.9)
    mu, lam = rbm.visible_offset, rbm.hidden_offset
    weight = rbm.weight.detach().clone().requires_grad_()
    b_c = (rbm.visible_bias + rbm.weight @ lam).detach().requires_grad_()
    c_c = (rbm.hidden_bias + rbm.weight.T @ mu).detach().requires_grad_()
    with torch.no_grad():  # the same model: free energies differ by a constant
        diff = centred_free_energy(data, weight, b_c, c_c, mu, lam) - rbm.free_energy(data)
        torch.testing.assert_close(diff, diff[:1].expand_as(diff))
    loss = (centred_free_energy(data, weight, b_c, c_c, mu, lam).mean()
            - centred_free_energy(negative, weight, b_c, c_c, mu, lam).mean())
    loss.backward()
    cd_loss(rbm, data, negative).backward()
    centre_gradients(rbm)
    torch.testing.assert_close(rbm.weight.grad, weight.grad)
    torch.testing.assert_close(rbm.visible_bias.grad, b_c.grad - weight.grad @ lam)
    torch.testing.assert_close(rbm.hidden_bias.grad, c_c.grad - weight.grad.T @ mu)


def test_offsets_track_the_data_means():
    rbm = random_rbm(6, 3, seed=1)
    v = torch.bernoulli(torch.full((50, 6), 0.2), generator=torch.Generator().manual_seed(0))
    for _ in range(400):
        update_offsets(rbm, v, 0.05)
    torch.testing.assert_close(rbm.visible_offset, v.mean(0))
    torch.testing.assert_close(rbm.hidden_offset, torch.sigmoid(v @ rbm.weight + rbm.hidden_bias).mean(0).detach())
    rbm.load_state_dict({k: t for k, t in RBM(6, 3).state_dict().items() if "offset" not in k})  # older checkpoints


def annealed_transition(rbm, base, beta):
    """T_beta(v'|v) = sum_h p_beta(h|v) p_beta(v'|h) by enumeration, [2^V, 2^V], rows v, columns v'."""
    vs, hs = all_states(rbm.num_visible), all_states(rbm.num_hidden)
    p_h = rbm_bernoulli_table(beta * (vs @ rbm.weight + rbm.hidden_bias), hs)  # [v, h]
    p_v = rbm_bernoulli_table((1 - beta) * base + beta * (hs @ rbm.weight.T + rbm.visible_bias), vs)  # [h, v']
    return p_h @ p_v


def rbm_bernoulli_table(logits, states):
    """prod_i Bernoulli(states_i; sigmoid(logits_i)) for every row of logits and every state: [rows, states]."""
    return torch.exp(states @ torch.nn.functional.logsigmoid(logits).T
                     + (1 - states) @ torch.nn.functional.logsigmoid(-logits).T).T


@torch.no_grad()
def test_raise_is_unbiased_for_the_ais_model():
    """Oracle: E[RAISE weight] = q_AIS(v), the marginal of the forward annealing chain, computed exactly
    from the transition matrices of a 4 x 3 RBM; with many betas q_AIS tends to p(v)."""
    rbm = random_rbm(4, 3, scale=1.0, seed=5)
    base = torch.tensor([0.3, -0.5, 1.0, 0.0])
    betas = torch.tensor([0.0, 0.3, 0.7, 1.0])
    vs = all_states(4)
    q = rbm_bernoulli_table(base[None], vs)[0]  # p_0, the base-rate RBM's visible marginal
    for beta in betas[1:]:
        q = q @ annealed_transition(rbm, base, float(beta))
    torch.manual_seed(0)
    runs = 20000
    log_w = raise_log_prob(rbm, base, betas, vs.repeat_interleave(runs, 0)).view(len(vs), runs)
    estimate = torch.logsumexp(log_w, 1) - math.log(runs)
    torch.testing.assert_close(estimate, q.log().double(), atol=0.03, rtol=0)
    # many betas: the AIS model approaches the RBM, and the mean log weight sits just below log p(v)
    exact = log_prob(rbm, vs, exact_log_partition(rbm)).double()
    fine = raise_log_prob(rbm, base, ais_schedule(2000), vs.repeat_interleave(200, 0)).view(len(vs), 200)
    assert bool(((fine.mean(1) - exact).abs() < 0.05).all()), (fine.mean(1), exact)


def test_ais_validates_schedule():
    rbm = RBM(4, 3)
    with pytest.raises(ValueError, match="betas"):
        ais(rbm, torch.zeros(4), torch.tensor([0.0, 0.5]))


RBM_RUN = ["--model", "rbm", "--set", "rbm.num_hidden=12", "--epochs", "2", "--lr", "0.05", "--no-progress", "--device", "cpu",
           "--set", 'train.optimizer="sgd"', "--set", "train.momentum=0.5", "--set", "eval.ais_betas=500",
           "--set", "eval.ais_runs=50", "--set", "eval.raise_betas=500",
           "--set", "eval.raise_examples=100"]


def test_rbm_through_the_cli(tmp_path, capsys):
    import json
    from vaekit.cli import main
    run_dir = tmp_path / "rbm"
    assert main(["run", *RBM_RUN, "--set", "rbm.persistent=true", "--set", "rbm.centering=0.01",
                 "--out", str(run_dir)]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    # 12 hidden units: the evaluator reports the exact log Z beside the AIS estimate
    assert abs(result["log_z"] - result["log_z_exact"]) < 0.1
    exact_nll = result["nll_ais_same_examples"] - result["log_z"] + result["log_z_exact"]  # same 100 points
    assert exact_nll - 3 * result["bracket_width_stderr"] - 0.01 < result["nll_raise"] < exact_nll + 2, (result, exact_nll)
    assert 10 < result["nll"] < 60 and result["estimator"].startswith("AIS")
    names = sorted(p.name for p in (run_dir / "pictures").glob("*.png"))
    assert names == ["filters.png", "gibbs_chain.png", "samples.png", "training_curves.png"]
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/free_energy_gap", "test/free_energy", "test/reconstruction_error"} <= set(row)
    capsys.readouterr()
    assert main(["reconstruct", str(run_dir)]) == 2
    assert "an RBM has no encoder" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--gap"]) == 2
    assert "q(z|x)" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--compile"]) == 2  # AIS has no log importance weights to compile
    assert "eval.compile" in capsys.readouterr().err


def test_pcd_resume_is_bit_exact(tmp_path, monkeypatch):
    """The persistent chains and the centring offsets travel in the checkpoint: a resumed centred PCD run
    equals an uninterrupted one."""
    from vaekit import config as configlib
    from vaekit import train as trainlib
    values = {"data": {"name": "digits"}, "model": {"name": "rbm"},
              "rbm": {"num_hidden": 10, "num_chains": 30, "persistent": True, "centering": 0.01},
              "train": {"epochs": 3, "optimizer": "sgd", "lr": 0.05, "progress": False,
                        "device": "cpu"}, "eval": {"monitor_samples": 0}, "out": str(tmp_path / "full")}
    full = trainlib.Trainer(configlib.from_dict(values))
    full.fit()
    values["out"] = str(tmp_path / "cut")
    values["train"]["epochs"] = 3
    cut = trainlib.Trainer(configlib.from_dict(values))
    cut.cfg.train.epochs = 2  # stop after two epochs (the schedule's total was fixed at construction)
    cut.fit()
    resumed = trainlib.Trainer(configlib.from_dict(values), tmp_path / "cut", resume=True)
    resumed.fit()
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert bool(resumed.model.chains_started)
    assert not torch.equal(resumed.model.hidden_offset, torch.full((10,), 0.5))  # the offsets moved


@pytest.mark.mnist
@torch.no_grad()
def test_ais_within_a_tenth_of_a_nat_on_a_784x10_mnist_rbm(mnist_dir):
    """784 visible x 10 hidden trained on MNIST by PCD (1000 updates), exact log Z by enumerating 2^10
    hidden states: forward AIS (100 runs, 10000 betas), reverse AIS from exact samples and RAISE on
    test digits all land within 0.1 nats. (A badly trained RBM whose annealing path crosses a sharp
    transition can defeat AIS: a model from 300 plain CD-1 updates from zero biases is off by 2.6 nats.)"""
    from vaekit.estimators import BernoulliRBM
    sets = load_dataset("mnist", mnist_dir, download=False)
    v = binarize(sets["train"].x[:20000], "static", torch.Generator().manual_seed(0))
    with torch.enable_grad():
        rbm = BernoulliRBM(n_components=10, learning_rate=0.05, momentum=0.5, n_iter=5, random_state=0).fit(v).model_
    exact, base, betas = float(exact_log_partition(rbm)), base_rate_bias(v), ais_schedule(10000)
    torch.manual_seed(0)
    forward = ais(rbm, base, betas, num_runs=100)
    reverse = ais(rbm, base, betas, init_v=exact_samples(rbm, 100))
    assert abs(forward["log_z"] - exact) < 0.1 and forward["stderr"] < 0.05, (forward["log_z"], exact)
    assert abs(reverse["log_z"] - exact) < 0.1, (reverse["log_z"], exact)
    test = binarize(sets["test"].x[:200], "static", torch.Generator().manual_seed(0))
    raised = raise_log_prob(rbm, base, betas, test)
    gap = float((log_prob(rbm, test, exact).double() - raised).mean())  # >= 0 on average: conservative
    assert -0.05 < gap < 0.1, gap


def test_gibbs_draws_follow_the_conditionals():
    """Block Gibbs on a 3 x 2 RBM: the chain's visible states settle at the exact marginal p(v)."""
    rbm = random_rbm(3, 2, scale=1.0, seed=3)
    with torch.no_grad():
        vs = all_states(3)
        exact = log_prob(rbm, vs, exact_log_partition(rbm)).exp()  # [8]
        torch.manual_seed(0)
        v = rbm.gibbs(torch.zeros(200_000, 3), 20)
    index = (v * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(index, minlength=8).double() / v.shape[0]
    stderr = (exact * (1 - exact) / v.shape[0]).sqrt()
    assert bool(((freq - exact).abs() < 5 * stderr + 1e-4).all()), (freq, exact)


def test_progress_lines_name_the_rbm_terms(tmp_path, capsys):
    from vaekit import config as configlib
    from vaekit.train import Trainer
    values = {"data": {"name": "digits"}, "model": {"name": "rbm"}, "rbm": {"num_hidden": 4},
              "train": {"epochs": 1, "progress": True, "device": "cpu"}, "out": str(tmp_path / "r")}
    Trainer(configlib.from_dict(values)).fit()
    assert "test/free_energy" in capsys.readouterr().out


def test_base_rate_init_sets_visible_biases(tmp_path):
    from vaekit import config as configlib
    from vaekit.train import Trainer
    values = {"data": {"name": "digits"}, "model": {"name": "rbm"}, "rbm": {"num_hidden": 4, "init": "base_rate"},
              "train": {"epochs": 1, "progress": False, "device": "cpu"}, "out": str(tmp_path / "r")}
    trainer = Trainer(configlib.from_dict(values))
    torch.testing.assert_close(torch.sigmoid(trainer.model.visible_bias.detach()),
                               trainer.data.train.x.mean(0).clamp(1e-3, 1 - 1e-3))
    values["model"]["name"] = "vae"
    with pytest.raises(configlib.ConfigError, match=r"unknown section.*\['rbm'\]"):  # an RBM's key, not a VAE's
        configlib.from_dict(values)
    values["model"]["name"] = "rbm"
    values["rbm"]["centering"] = 1.5
    with pytest.raises(configlib.ConfigError, match=r"rbm.centering.*\[0, 1\]"):
        configlib.from_dict(values)


def test_the_mnist_benchmark_config_runs(tmp_path):
    """bench/configs/mnist_rbm.toml, shrunk to a few seconds on the digits: the documented command works."""
    import json
    from pathlib import Path
    from vaekit.cli import main
    config = Path(__file__).parents[1] / "bench" / "configs" / "mnist_rbm.toml"
    shrink = ["data.name=digits", "rbm.num_hidden=8", "train.epochs=1", "eval.ais_betas=200", "eval.ais_runs=20",
              "eval.raise_examples=20", "eval.raise_betas=200", "train.device=cpu"]
    args = ["run", "--config", str(config), "--out", str(tmp_path / "r")]
    for item in shrink:
        args += ["--set", item]
    assert main(args) == 0
    result = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert result["raise_examples"] == 20 and abs(result["log_z"] - result["log_z_exact"]) < 0.5
