"""RBM oracles: conditionals and free energy against enumeration, AIS against the exact log Z."""

import math

import pytest
import torch

from vaekit.data import binarize, load_dataset
from vaekit.models.rbm import RBM, ais, ais_schedule, all_states, base_rate_bias, cd_loss


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
    torch.testing.assert_close(rbm.log_partition_exact(), brute, atol=1e-4, rtol=0)
    assert torch.allclose(torch.logsumexp(rbm.log_prob(vs, brute), 0), torch.tensor(0.0), atol=1e-5)


def test_exact_log_z_refuses_large_models():
    with pytest.raises(ValueError, match="use ais"):
        RBM(784, 500).log_partition_exact()


def exact_samples(rbm, n, seed=0):
    """Exact draws from p(v): h from its marginal by enumeration, then v | h."""
    g = torch.Generator().manual_seed(seed)
    hs = all_states(rbm.num_hidden)
    logits = hs @ rbm.hidden_bias + torch.nn.functional.softplus(hs @ rbm.weight.T + rbm.visible_bias).sum(-1)
    h = hs[torch.multinomial(torch.softmax(logits, 0), n, replacement=True, generator=g)]
    return torch.bernoulli(torch.sigmoid(h @ rbm.weight.T + rbm.visible_bias), generator=g)


def digits_binary():
    return binarize(load_dataset("digits")["train"].x, "static", torch.Generator().manual_seed(0))


def train_cd(rbm, v, steps, lr=0.05, k=1, persistent=False, seed=0):
    """SGD on the CD surrogate; rbm is re-initialised from `seed` so results do not depend on test order."""
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
        negative = rbm.gibbs(start, k)
        chains = negative if persistent else chains
        optimizer.zero_grad()
        cd_loss(rbm, batch, negative).backward()
        optimizer.step()
    return rbm


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_and_pcd_raise_the_exact_log_likelihood(persistent):
    v = digits_binary()[:, :16]  # a 16-pixel window of the digits: exact log Z by enumeration of 2^8 h
    rbm = RBM(16, 8)
    with torch.no_grad():
        before = float(rbm.log_prob(v, rbm.log_partition_exact()).mean())
    train_cd(rbm, v, 300, persistent=persistent)
    with torch.no_grad():
        after = float(rbm.log_prob(v, rbm.log_partition_exact()).mean())
    assert after > before + 1.0, (before, after)


@torch.no_grad()
def test_ais_brackets_the_exact_log_z_of_a_trained_digits_rbm():
    """64 x 15 trained on digits (Salakhutdinov & Murray's check, small enough to enumerate 2^15 h)."""
    v = digits_binary()
    with torch.enable_grad():
        rbm = train_cd(RBM(64, 15), v, 400, lr=0.1)
    exact = float(rbm.log_partition_exact())
    base = base_rate_bias(v)
    betas = torch.cat([torch.linspace(0, 0.5, 500), torch.linspace(0.5, 0.9, 1000)[1:], torch.linspace(0.9, 1, 1000)[1:]])
    torch.manual_seed(0)
    forward = ais(rbm, base, betas, num_runs=200)
    reverse = ais(rbm, base, betas, init_v=exact_samples(rbm, 200))
    assert abs(forward["log_z"] - exact) < 0.1, (forward["log_z"], exact)
    assert abs(reverse["log_z"] - exact) < 0.1, (reverse["log_z"], exact)
    assert forward["stderr"] < 0.1 and forward["log_w"].shape == (200,)


def test_ais_validates_schedule():
    rbm = RBM(4, 3)
    with pytest.raises(ValueError, match="betas"):
        ais(rbm, torch.zeros(4), torch.tensor([0.0, 0.5]))


RBM_RUN = ["--model", "rbm", "--latent", "12", "--epochs", "2", "--lr", "0.05", "--no-progress", "--device", "cpu",
           "--set", 'train.optimizer="sgd"', "--set", "train.momentum=0.5", "--set", "eval.ais_betas=500",
           "--set", "eval.ais_runs=50", "--set", "eval.ais_chain_sweeps=50"]


def test_rbm_through_the_cli(tmp_path, capsys):
    import json
    from vaekit.cli import main
    run_dir = tmp_path / "rbm"
    assert main(["run", *RBM_RUN, "--set", "train.persistent=true", "--out", str(run_dir)]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    # 12 hidden units: the evaluator reports the exact log Z beside the AIS estimates
    assert abs(result["log_z"] - result["log_z_exact"]) < 0.1 and abs(result["log_z_reverse"] - result["log_z_exact"]) < 0.1
    assert 10 < result["nll"] < 60 and result["estimator"].startswith("AIS")
    names = sorted(p.name for p in (run_dir / "pictures").glob("*.png"))
    assert names == ["filters.png", "gibbs_chain.png", "samples.png", "training_curves.png"]
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/free_energy_gap", "test/free_energy", "test/reconstruction_error"} <= set(row)
    capsys.readouterr()
    assert main(["reconstruct", str(run_dir)]) == 2
    assert main(["evaluate", str(run_dir), "--gap"]) == 2
    assert "q(z|x)" in capsys.readouterr().err


def test_pcd_resume_is_bit_exact(tmp_path, monkeypatch):
    """The persistent chains travel in the checkpoint: a resumed PCD run equals an uninterrupted one."""
    from vaekit import config as configlib
    from vaekit import train as trainlib
    values = {"data": {"name": "digits"}, "model": {"name": "rbm", "latent": 10, "num_chains": 30},
              "train": {"epochs": 3, "persistent": True, "optimizer": "sgd", "lr": 0.05, "progress": False,
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


@pytest.mark.mnist
@torch.no_grad()
def test_ais_brackets_the_exact_log_z_of_a_784x10_mnist_rbm(mnist_dir):
    """784 visible x 10 hidden trained on MNIST, exact log Z by enumerating 2^10 hidden states. Forward
    AIS is unbiased in Z, so log Z is rarely overestimated (P(excess > t) <= exp(-t)); reverse AIS from
    exact samples errs the other way. Here their log weights spread over ~20 nats: within 0.1 nats
    needs far more runs (1000 runs x 20000 betas gave -0.19 +- 0.31), so the test checks the bracket."""
    x = load_dataset("mnist", mnist_dir, download=False)["train"].x[:20000]
    v = binarize(x, "static", torch.Generator().manual_seed(0))
    with torch.enable_grad():
        rbm = train_cd(RBM(784, 10), v, 300, lr=0.05)
    exact = float(rbm.log_partition_exact())
    torch.manual_seed(0)
    forward = ais(rbm, base_rate_bias(v), ais_schedule(10000), num_runs=100)
    reverse = ais(rbm, base_rate_bias(v), ais_schedule(10000), init_v=exact_samples(rbm, 100))
    assert exact - 3 < forward["log_z"] < exact + 0.5, (forward["log_z"], exact)
    assert exact - 0.5 < reverse["log_z"] < exact + 5, (reverse["log_z"], exact)


def test_gibbs_draws_follow_the_conditionals():
    """Block Gibbs on a 3 x 2 RBM: the chain's visible states settle at the exact marginal p(v)."""
    rbm = random_rbm(3, 2, scale=1.0, seed=3)
    with torch.no_grad():
        vs = all_states(3)
        exact = rbm.log_prob(vs, rbm.log_partition_exact()).exp()  # [8]
        torch.manual_seed(0)
        v = rbm.gibbs(torch.zeros(200_000, 3), 20)
    index = (v * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(index, minlength=8).double() / v.shape[0]
    stderr = (exact * (1 - exact) / v.shape[0]).sqrt()
    assert bool(((freq - exact).abs() < 5 * stderr + 1e-4).all()), (freq, exact)


def test_base_rate_init_sets_visible_biases(tmp_path):
    from vaekit import config as configlib
    from vaekit.train import Trainer
    values = {"data": {"name": "digits"}, "model": {"name": "rbm", "latent": 4, "init": "base_rate"},
              "train": {"epochs": 1, "progress": False, "device": "cpu"}, "out": str(tmp_path / "r")}
    trainer = Trainer(configlib.from_dict(values))
    torch.testing.assert_close(torch.sigmoid(trainer.model.visible_bias.detach()),
                               trainer.data.train.x.mean(0).clamp(1e-3, 1 - 1e-3))
    values["model"]["name"] = "vae"
    with pytest.raises(configlib.ConfigError, match="base_rate"):
        configlib.from_dict(values)
