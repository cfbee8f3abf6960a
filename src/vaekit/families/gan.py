"""The GAN family: implicit density, a two-player game (Goodfellow et al. 2014; DCGAN networks).

Each step updates the discriminator on a real and a generated batch, then (every gan.d_steps steps)
the generator through the updated discriminator, each player with its own optimizer; with gan.ema > 0
an exponential moving average of the generator is the one sampled and evaluated. A GAN has no
likelihood: it is judged by its samples (vaekit.classifier's check until the shared yardstick exists).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import torch

from .. import classifier, pictures, plots
from ..config import ConfigError, check_choice, check_positive
from ..decoder_ais import ObservedGenerator, choose_scale
from ..models.gan import (LOSSES, GAN, code_consistency, code_cross_entropy, code_information, discriminator_loss,
                          evaluating, game_value, generator_loss, random_affine)
from ..nets import conv_stages
from ..results import Result, flat, proportion
from ..runs import HELD_OUT_SEED, seeded_stream
from ..train import StepState, minimise
from . import Family

DISCRIMINATOR_WINS = 1e-2  # an epoch's mean discriminator loss below this: D separates perfectly
COLLAPSE_RATIO = 0.25  # generated batches this much less spread out than the data: mode collapse
CONFIDENCE = 0.9  # the classifier check counts samples classified with at least this confidence


@dataclass
class GANConfig:
    latent: int = 64  # dimension of z ~ N(0, I)
    architecture: str = "auto"  # conv (DCGAN) | mlp | auto: conv for images, mlp for flat data
    width: int = 64  # conv: channels of the first discriminator stage (the generator mirrors it)
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # mlp: discriminator sizes, reversed for G
    loss: str = "non_saturating"  # non_saturating | minimax | hinge
    d_steps: int = 1  # discriminator steps per generator step
    ema: float = 0.0  # > 0: decay of the generator's moving average (e.g. 0.999), the one sampled
    spectral_norm: bool = False  # spectral normalisation of every discriminator layer (Miyato et al. 2018)
    categories: int = 0  # > 0: an InfoGAN code c ~ Uniform{1..K} beside z, recovered by a head Q(c | x)
    info_weight: float = 1.0  # weight of the code's cross-entropy -log Q(c | G(z, c)) in both losses
    real_info_weight: float = 0.0  # weight of I_Q(c; x) on real images in D's loss: Q sorts them into K groups
    augment_weight: float = 0.0  # weight of KL(Q(c|x) || Q(c|T x)) for random affine T in D's loss (conv only)

    def validate(self) -> None:
        check_choice(self.architecture, ("auto", "conv", "mlp"), "gan.architecture")
        check_choice(self.loss, LOSSES, "gan.loss")
        check_positive(self, "gan", ("latent", "width", "hidden", "d_steps"))
        if self.categories < 0 or self.categories == 1:
            raise ConfigError(f"gan.categories: expected 0 (no code) or a number of categories >= 2, "
                              f"got {self.categories}")
        for key in ("info_weight", "real_info_weight", "augment_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"gan.{key}: expected a weight >= 0, got {getattr(self, key)}")
        for key in ("real_info_weight", "augment_weight"):
            if getattr(self, key) and not self.categories:
                raise ConfigError(f"gan.{key} = {getattr(self, key)} needs a code to sort the real images into: "
                                  "set gan.categories >= 2")
        if self.augment_weight and self.architecture == "mlp":
            raise ConfigError(f"gan.augment_weight = {self.augment_weight} rotates and shifts images: it needs "
                              "gan.architecture = 'conv' (or 'auto' on image data)")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"gan.ema: expected a decay in [0, 1) (0: no average), got {self.ema}")


def architecture(c: GANConfig, spec) -> str:
    """gan.architecture, with "auto" resolved: conv where the image shape allows a stride-2 stage."""
    if c.architecture != "auto":
        return c.architecture
    try:
        conv_stages(*spec.image_shape[1:])
        return "conv"
    except ValueError:
        return "mlp"


def build(c: GANConfig, spec) -> GAN:
    if c.augment_weight and architecture(c, spec) != "conv":
        raise ConfigError(f"gan.augment_weight = {c.augment_weight} rotates and shifts images, but data of shape "
                          f"{'x'.join(map(str, spec.image_shape))} get the MLP networks: set gan.augment_weight = 0")
    return GAN(spec.num_dims, spec.image_shape, c.latent, architecture(c, spec), c.width, list(c.hidden),
               c.spectral_norm, c.ema, c.categories)


def grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """The Euclidean norm of all of a module's gradients together (a scalar tensor, no sync)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.stack([g.norm() for g in grads]).norm() if grads else torch.zeros(())


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No weight gradients for module inside the block: the generator's backward pass through the
    discriminator then skips the discriminator's weight-gradient products it would throw away."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def code_term(model: GAN, code_logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The mean of -log Q(c | G(z, c)) over the batch with a code (InfoGAN), else 0."""
    return code_cross_entropy(code_logits, z).mean() if model.categories else code_logits.new_zeros(())


def invariance_term(model: GAN, c: GANConfig, x: torch.Tensor, code_logits: torch.Tensor) -> torch.Tensor:
    """The mean of KL(Q(c | x) || Q(c | T(x))) over real images x [B, D] moved by random affine maps T
    (gan.augment_weight > 0; one more discriminator pass), else 0."""
    if not c.augment_weight:
        return code_logits.new_zeros(())
    images = x.reshape(-1, *model.image_shape)
    _, moved_logits = model.discriminate_code(random_affine(images).flatten(1))
    return code_consistency(code_logits, moved_logits).mean()


def step(state: StepState, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One discriminator update on x [B, D] and B generated images, then the generator's update
    against the updated discriminator every gan.d_steps steps (as pytorch/examples' DCGAN: one
    generator forward serves both). Metrics: both losses, the value V, D's accuracy on real and on
    generated images, both gradient norms; with a code, the bound log K - E[-log Q(c | G(z, c))]
    on the mutual information I(c; G(z, c)) (log K when Q recovers every code) and Q's I_Q(c; x) on
    the real batch (log K when it sorts them into K equal, certain groups)."""
    model, c = state.model, state.cfg.family
    z = model.latents(x.shape[0])
    fake = model.generate(z, ema=False)
    real_logits, real_code_logits = model.discriminate_code(x)
    fake_logits, code_logits = model.discriminate_code(fake.detach())
    loss_d = discriminator_loss(real_logits, fake_logits, c.loss).mean()
    info_d = code_term(model, code_logits, z)
    info_real = code_information(real_code_logits) if model.categories else loss_d.new_zeros(())
    consistency = invariance_term(model, c, x, real_code_logits)
    minimise(loss_d + c.info_weight * info_d - c.real_info_weight * info_real + c.augment_weight * consistency,
             state.optimizers["discriminator"], "discriminator loss")
    metrics = {"loss_d": loss_d.detach()}
    if model.categories:
        metrics.update(mutual_information=math.log(model.categories) - info_d.detach(),
                       real_code_information=info_real.detach())
    if c.augment_weight:
        metrics["code_consistency"] = consistency.detach()
    grad_norm_d = grad_norm(model.discriminator)
    if (state.step + 1) % c.d_steps == 0:
        with frozen(model.discriminator):
            fake_logits_g, code_logits_g = model.discriminate_code(fake)
            loss_g = generator_loss(fake_logits_g, c.loss).mean() + c.info_weight * code_term(model, code_logits_g, z)
        minimise(loss_g, state.optimizers["generator"], "generator loss")
        metrics.update(loss_g=loss_g.detach(), grad_norm_g=grad_norm(model.generator))
        if model.generator_ema is not None:
            model.update_ema()
    metrics.update(value=game_value(real_logits, fake_logits).detach().mean(),
                   d_accuracy_real=(real_logits.detach() > 0).float().mean(),
                   d_accuracy_fake=(fake_logits.detach() < 0).float().mean(), grad_norm_d=grad_norm_d)
    return metrics


def spread(x: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between the rows of x [N, D]."""
    n = x.shape[0]
    return float(torch.cdist(x, x).sum() / max(1, n * (n - 1)))


@torch.no_grad()
def monitor(model: GAN, x: torch.Tensor, cfg) -> dict[str, float]:
    """Held-out terms: the discriminator's accuracy on held-out real images (against its training
    accuracy it shows overfitting), and the spread of generated images over the data's (near 0: the
    generator collapsed onto a few images)."""
    x = x[:cfg.eval.monitor_examples or 1000]
    with evaluating(model):
        generated = model.sample(x.shape[0])
        real_accuracy = float((model.discriminate(x) > 0).float().mean())
        fake_accuracy = float((model.discriminate(generated) < 0).float().mean())
    return {"d_accuracy_real": real_accuracy, "d_accuracy_fake": fake_accuracy,
            "spread_ratio": spread(generated) / max(spread(x), 1e-12)}


def diagnose(rows: list[dict]) -> list[str]:
    """Warnings of a failing game from the logged rows (the last is this epoch's): a discriminator
    that wins outright, a generator whose samples collapse. A fresh generator's samples are all alike
    too, so collapse is a spread that fell below COLLAPSE_RATIO after having reached it."""
    row, warnings = rows[-1], []
    if row.get("train/loss_d", 1.0) < DISCRIMINATOR_WINS:
        warnings.append(f"the discriminator wins: its loss averaged {row['train/loss_d']:.2g} over the epoch, "
                        "so the generator gets no useful gradient (try gan.loss = 'non_saturating', "
                        "gan.spectral_norm = true or a lower train.lr)")
    ratios = [v for r in rows for k, v in r.items() if k.endswith("/spread_ratio")]
    if ratios and ratios[-1] < COLLAPSE_RATIO <= max(ratios):
        warnings.append(f"mode collapse: generated images spread {ratios[-1]:.2f} times as much as the data's "
                        f"(below {COLLAPSE_RATIO}, down from {max(ratios):.2f})")
    return warnings


PROGRESS_COLUMNS = 8  # samples per code in the progress grid


@torch.no_grad()
def fixed_latents(model: GAN, seed: int, num: int = 64) -> torch.Tensor:
    """The same latents at every epoch, from their own generator: progress pictures are comparable.
    With a code: K rows of PROGRESS_COLUMNS, row k all code k, column j all the same z (InfoGAN's
    figure: a row shows what its code learned)."""
    g = torch.Generator().manual_seed(seed)
    if not model.categories:
        return torch.randn(num, model.latent, generator=g).to(model.prior_loc.device)
    z = torch.randn(PROGRESS_COLUMNS, model.latent, generator=g).repeat(model.categories, 1)
    codes = torch.eye(model.categories).repeat_interleave(PROGRESS_COLUMNS, 0)
    return torch.cat([z, codes], 1).to(model.prior_loc.device)


def epoch_end(trainer) -> None:
    """A grid of samples from fixed latents after every epoch: pictures/progress/epoch_NNNN.png."""
    if not trainer.save:
        return
    model, shape = trainer.model, trainer.spec.image_shape
    images = model.decode_mean(fixed_latents(model, trainer.cfg.eval.seed)).cpu().reshape(-1, *shape)
    path = trainer.run_dir / "pictures" / "progress" / f"epoch_{trainer.epoch:04d}.png"
    nrow = PROGRESS_COLUMNS if model.categories else None
    plots.save_image_grid(images, path, nrow=nrow, scale=pictures.scale_for(shape))


def _label_results(prefix: str, check: dict, what: str) -> dict[str, Result]:
    n = check["num_examples"]
    return {f"{prefix}confident_share": proportion(check["confident_share"], n,
                                                   f"classifier, {what}: share with max p(c|x) >= {CONFIDENCE}"),
            f"{prefix}label_entropy": Result(check["label_entropy"], None, f"classifier, {what}: entropy of the "
                                             "predicted labels", "estimate", None, n, "nats")}


@torch.no_grad()
def evaluate(model: GAN, data, cfg, progress: bool = True) -> dict:
    """No likelihood: a classifier trained on the real training images and labels (cached) judges
    eval.quality_samples generated images, the real test images beside them: the share classified
    with confidence >= 0.9 and the entropy of the predicted labels (log 10 = 2.303 when all ten
    classes are equally common)."""
    start, e = time.perf_counter(), cfg.eval
    note = "a GAN defines no likelihood: judged by its samples"
    if data.train.y is None:
        return {"note": note + " (no labels: no classifier check)", "results": {}}
    with torch.enable_grad():  # trained here on first use, then read from the cache
        net, info = classifier.load_or_train_classifier(data.train, progress=progress and sys.stderr.isatty())
    accuracy = classifier.accuracy(net, data.test)
    with seeded_stream(e.seed, data.test.x.device):
        generated = torch.cat([model.sample(min(e.batch_size * 10, e.quality_samples - i))
                               for i in range(0, e.quality_samples, e.batch_size * 10)])
    shape = data.test.image_shape
    fake = classifier.label_check(classifier.classify(net, generated, shape), CONFIDENCE)
    real = classifier.label_check(classifier.classify(net, data.test.x, shape), CONFIDENCE)
    results = {**_label_results("", fake, "generated images"), **_label_results("real_", real, "test images"),
               "classifier_accuracy": proportion(accuracy, data.test.x.shape[0], "test accuracy of the classifier")}
    return {**flat(results), "results": results, "note": note, "estimator": "classifier check",
            "label_histogram": fake["label_histogram"], "real_label_histogram": real["label_histogram"],
            "num_examples": generated.shape[0], "seconds": time.perf_counter() - start}


def observation_model(model: GAN, data, cfg, progress: bool = False) -> tuple[ObservedGenerator, dict]:
    """p(x|z) for `vaekit evaluate --ais` (Wu et al. 2017): Bernoulli(logits = G(z)) when the test images
    are binary, else N(g(z), sigma^2 I) with sigma the value of eval.observation_scales that gives
    eval.observation_examples held-out images the highest AIS log-likelihood. Held out: the run's
    validation split when it has one, else a fixed random draw of training images (a GAN usually
    trains on all of them; one scalar chosen on images it has seen)."""
    if cfg.data.binarization != "none":
        return ObservedGenerator(model, "bernoulli", categories=model.categories), {}
    held, which = (data.valid, "validation") if data.valid is not None else (data.train, "training")
    n = min(cfg.eval.observation_examples, len(held))
    pick = torch.randperm(len(held), generator=torch.Generator().manual_seed(HELD_OUT_SEED))[:n]
    build = lambda scale: ObservedGenerator(model, "gaussian", scale, model.categories)
    scale, means = choose_scale(build, held.x[pick.to(held.x.device)], cfg.eval, progress)
    grid = ", ".join(f"{s:g}: {m:.1f}" for s, m in means.items())
    return build(scale), {"observation_scale": Result(
        scale, None, f"sigma of N(g(z), sigma^2 I): the best mean AIS log p(x) of {n} {which} images over "
        f"eval.observation_scales ({grid} nats)", "estimate", None, n, "grey levels")}


FAMILY = Family(
    name="gan", help="generative adversarial network (DCGAN or MLP; no likelihood)", config=GANConfig,
    build=build, step=step, evaluate=evaluate, monitor=monitor, players=lambda model: model.players(),
    pictures=pictures.pick("samples", "curves", interpolations="prior_interpolations"),
    no_pictures={"reconstructions": "a GAN has no encoder: it cannot reconstruct an image (its samples: "
                                    "'vaekit sample', its latent space: 'vaekit interpolate')"},
    defaults={"data": {"binarization": "none"},
              "train": {"lr": 2e-4, "adam_betas": [0.5, 0.999], "adam_eps": 1e-8, "lr_schedule": "constant",
                        "batch_size": 64, "epochs": 25}},
    diagnose=diagnose, epoch_end=epoch_end, observation_model=observation_model)
