"""What latent-variable families share (VAE, linear-Gaussian, the deeper VAEs to come): the step on
one per-example objective, the held-out gap terms, the importance-sampled evaluation, the pictures."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal

from .. import pictures
from ..config import ConfigError, check_choice, check_positive
from ..evaluate import evaluate
from ..gap import ACTIVE_UNIT_THRESHOLD
from ..models.vae import LIKELIHOODS
from ..nets import ACTIVATIONS, glorot_
from ..objectives import iwae_bound, iwae_dreg
from ..protocols import ExactDensity, LayeredLatents
from ..train import StepState, ascend


INITS = ("default", "glorot")  # section.init: PyTorch's default weights, or nets.glorot_
OUTPUT_BIASES = ("default", "data")  # section.output_bias: the decoder's last bias as drawn, or from the data
DATA_BIAS_CLIP = 1e-3  # the mean pixel intensity is clipped to [c, 1 - c] before its logit (Burda et al.'s code)


def check_section(section, prefix: str, positive: tuple[str, ...]) -> None:
    """What every latent-variable family's section checks: its likelihood, activation, init and
    output_bias are known, the named sizes (and min_scale) positive."""
    check_choice(section.likelihood, LIKELIHOODS, f"{prefix}.likelihood")
    check_choice(section.activation, ACTIVATIONS, f"{prefix}.activation")
    check_choice(getattr(section, "init", "default"), INITS, f"{prefix}.init")
    check_choice(section.output_bias, OUTPUT_BIASES, f"{prefix}.output_bias")
    check_positive(section, prefix, (*positive, "min_scale"))


def initialise(model, section):
    """The model's weights as section.init says: "glorot" redraws every Linear layer (nets.glorot_), for
    MLP networks. Called by a family's build, inside the seeded stream of the initial weights."""
    if getattr(section, "init", "default") == "glorot":
        glorot_(model)
    return model


def data_bias(x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """The output bias b [D] under which p(x|z) at zero decoder features has the data's mean x_bar [D]:
    b = logit(clip(x_bar, c, 1 - c)) for Bernoulli logits, b = x_bar for a Gaussian or logistic location
    (Burda et al. 2016's code: the decoder then starts at the marginal of every pixel, not at 1/2)."""
    mean = x.double().mean(dim=0)
    if likelihood == "bernoulli":
        mean = mean.clamp(DATA_BIAS_CLIP, 1 - DATA_BIAS_CLIP)
        return (mean.log() - (-mean).log1p()).float()
    return mean.float()


def init(model, data, section) -> None:
    """A data-dependent start (Family.init): with section.output_bias = "data", the decoder's last bias
    from the training data's mean (data_bias)."""
    if section.output_bias != "data":
        return
    layer = model.output_layer()
    if layer is None or layer.bias is None:
        raise ConfigError("output_bias: 'data' needs a decoder whose last layer is a Linear one with a bias per "
                          "data dimension (an MLP decoder); this model's has none")
    with torch.no_grad():
        layer.bias.copy_(data_bias(data.train.x, model.likelihood_name).to(layer.bias))


class _PosteriorLogProb(torch.nn.Module):
    """log q(z|x) of a model as a module call, for torch.func.functional_call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.posterior(x).log_prob(z)


def held_posterior(model, x: torch.Tensor):
    """z -> log q(z|x) [K, B] computed with every parameter of the model held fixed (detached) while z
    keeps its own path: what DReG subtracts for a q of several layers, whose later layers depend on the
    draws of the earlier ones."""
    held = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    log_prob = _PosteriorLogProb(model)
    return lambda z: torch.func.functional_call(log_prob, held, (x, z))


def bound(model, x: torch.Tensor, cfg) -> torch.Tensor:
    """The training objective train.objective: the ELBO (analytic KL) or the IWAE bound L_K with
    K = train.num_samples, per example [B]; train.gradient = "dreg" differentiates L_K by DReG (for any
    reparameterised q: one Gaussian layer, or a chain of them)."""
    if cfg.train.objective == "iwae" and cfg.train.gradient == "dreg":
        q = model.posterior(x)
        gaussian = isinstance(q, Independent) and isinstance(q.base_dist, Normal)
        held = None if gaussian else held_posterior(model, x)
        return iwae_dreg(x, q, model.prior(), model.likelihood, cfg.train.num_samples, held)
    if cfg.train.objective == "iwae":
        return iwae_bound(model.log_weights(x, cfg.train.num_samples))
    return model.elbo(x, cfg.train.num_samples)


def rate_terms(model, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(E_q[log p(x|z)], [KL_1, ..., KL_L]), each [B]: one KL per layer or group of a model of several
    (LayeredLatents), else the one KL."""
    if isinstance(model, LayeredLatents):
        return model.kl_terms(x, num_samples)
    reconstruction, kl = model.elbo_terms(x, num_samples)
    return reconstruction, [kl]


def annealed_elbo(model, x: torch.Tensor, cfg, beta: torch.Tensor) -> torch.Tensor:
    """The ELBO [B], with the gradient of E_q[log p(x|z)] - beta * sum_l max(lambda, KL_l): the KL
    weight beta warms up from 0 to 1 (Bowman et al. 2016; Sonderby et al. 2016), and a latent group
    (a layer) whose batch-mean KL_l is under lambda = train.free_bits nats is not pushed further down
    (free bits, Kingma et al. 2016, eq. 15). The value is the bound itself, beta = 1, no floor."""
    reconstruction, kls = rate_terms(model, x, cfg.train.num_samples)
    bits = cfg.train.free_bits
    pushed = sum(torch.where(kl.mean() > bits, kl, kl.detach()) if bits else kl for kl in kls)
    surrogate = reconstruction - beta * pushed
    return (reconstruction - sum(kls)).detach() + surrogate - surrogate.detach()


def step(state: StepState, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One Adam step up the bound; logged as train/elbo or train/iwae."""
    t = state.cfg.train
    if t.kl_warmup_steps or t.free_bits:
        beta = min(1.0, (state.step + 1) / t.kl_warmup_steps) if t.kl_warmup_steps else 1.0
        return ascend(state, annealed_elbo, x, "elbo", args=(torch.tensor(beta, device=x.device),))
    return ascend(state, bound, x, t.objective)


@torch.no_grad()
def monitor(model, x: torch.Tensor, cfg) -> dict[str, float]:
    """The cheap gap terms on a held-out set [N, D]: mean ELBO (analytic KL, one sample), its KL term,
    the number of active latent units (Burda et al. 2016: Cov_x(E_q[z_j]) > 0.01), and on the first
    eval.monitor_examples points the IWAE bound with K = eval.monitor_samples (and the exact log p(x)
    where the model has one): the gap as it evolves. A model of several stochastic layers adds each
    layer's KL (kl_1, ..., kl_L: a layer whose KL stays near 0 is inactive)."""
    e = cfg.eval
    model.eval()
    elbo, layers = 0.0, None
    means = []
    for xb in x.split(e.batch_size):
        reconstruction, kls = rate_terms(model, xb)
        elbo += float((reconstruction - sum(kls)).sum())
        layers = [float(k.sum()) + (layers[i] if layers else 0.0) for i, k in enumerate(kls)]
        means.append(model.encode_mean(xb))
    terms = {"elbo": elbo / x.shape[0], "kl": sum(layers) / x.shape[0],
             "active_units": int((torch.cat(means).var(dim=0) > ACTIVE_UNIT_THRESHOLD).sum())}
    if len(layers) > 1:
        terms.update({f"kl_{i + 1}": total / x.shape[0] for i, total in enumerate(layers)})
    subset = x[:e.monitor_examples]
    if e.monitor_samples and subset.shape[0]:
        k = e.monitor_samples
        total = sum(float(iwae_bound(model.log_weights(xb, k)).sum()) for xb in subset.split(e.batch_size))
        terms[f"iwae{k}"] = total / subset.shape[0]
        if isinstance(model, ExactDensity):
            terms["log_px"] = float(model.log_prob(subset).mean())
    model.train()
    return terms


def evaluate_test(model, data, cfg, progress: bool = True) -> dict:
    """log p(x) by importance sampling on the test set, the ELBO and its terms, IWAE bounds."""
    return evaluate(model, data.test.x, cfg.eval, progress)


PICTURES = pictures.pick("samples", "reconstructions", "interpolations", "latent", "curves")
