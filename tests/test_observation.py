"""Observation models and image networks of the VAEs: the 256-level discretised logistic is a
distribution over the grey levels (its masses sum to 1, its mean and samples agree with them), and
the convolutional encoder/decoder take residual blocks."""

import json

import pytest
import torch

from vaekit.cli import main
from vaekit.models.vae import VAE, DiscretizedLogistic
from vaekit.nets import ConvDiscriminator, ConvGenerator, ResidualConv

LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize("loc, scale", [(0.3, 0.05), (0.0, 0.001), (1.2, 0.02), (-3.0, 0.5), (0.5, 30.0),
                                        (0.998, 1e-4), (0.5 + 0.5 / 255, 1e-3)])
def test_the_masses_of_the_256_levels_sum_to_one(loc, scale):
    law = DiscretizedLogistic(torch.tensor([loc], dtype=torch.float64), torch.tensor([scale], dtype=torch.float64))
    log_p = law.log_prob(LEVELS.unsqueeze(-1)).squeeze(-1)  # [256]
    assert torch.isfinite(log_p).all()
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-9)
    assert float(law.mean) == pytest.approx(float((LEVELS * log_p.exp()).sum()), abs=1e-9)


def test_samples_are_levels_drawn_with_their_masses():
    torch.manual_seed(0)
    law = DiscretizedLogistic(torch.full((200_000,), 0.4), torch.full((200_000,), 0.03))
    x = law.sample()
    assert torch.equal(x, torch.round(x * 255) / 255) and 0 <= float(x.min()) and float(x.max()) <= 1
    p = DiscretizedLogistic(torch.tensor([0.4], dtype=torch.float64),
                            torch.tensor([0.03], dtype=torch.float64)).log_prob(LEVELS.unsqueeze(-1)).exp().squeeze(-1)
    counts = torch.bincount(torch.round(x * 255).long(), minlength=256).double() / x.numel()
    assert torch.allclose(counts, p, atol=4 * (p * (1 - p) / x.numel()).sqrt().max().item() + 1e-4)


def test_a_vae_with_the_logistic_trains_through_the_cli_on_grey_levels(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", "vae", "--likelihood", "logistic", "--data", "digits", "--binarization", "none",
                 "--epochs", "3", "--set", "eval.num_samples=20", "--no-progress", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/elbo"] > rows[0]["train/elbo"]
    nll = json.loads((out / "eval.json").read_text())["results"]["nll"]["value"]
    assert 0 < nll < 64 * 8 * 0.6932  # nats: below 8 bits a pixel, uniform over 256 levels


def test_residual_blocks_keep_shapes_and_start_near_the_network_without_them():
    plain = ConvGenerator(8, (1, 28, 28), width=8)  # the DCGAN as the zoo's GANs were trained: no blocks
    assert not any(isinstance(m, ResidualConv) for m in plain.modules())
    generator, critic = ConvGenerator(8, (1, 28, 28), width=8, blocks=2), ConvDiscriminator((1, 28, 28), 8, blocks=1)
    assert sum(isinstance(m, ResidualConv) for m in generator) == 4
    assert sum(isinstance(m, ResidualConv) for m in critic) == 2
    z = torch.randn(5, 8)
    assert generator(z).shape == (5, 1, 28, 28) and critic(generator(z)).shape == (5, 1)
    block = ResidualConv(4, torch.nn.ReLU)
    h = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        assert float((block(h) - h).norm() / h.norm()) < 0.1


def test_the_resconv_preset_trains_and_mlps_refuse_blocks(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "vae", "--preset", "resconv", "--data", "digits", "--epochs", "1",
                 "--no-progress", "--out", str(out)]) == 0
    model = VAE(64, [], 4, architecture="conv", image_shape=(1, 8, 8), width=4, blocks=1, likelihood="logistic")
    assert model.log_weights(torch.rand(3, 64), 2).shape == (2, 3)
    assert main(["train", "--model", "vae", "--set", "vae.blocks=1", "--data", "digits", "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "mlp")]) == 2
