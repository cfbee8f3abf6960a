"""One training loop for every model family, with a step function per family.

A step function takes (model, x [B, D], train config) and returns the per-example training bound
[B] (the value logged, higher is better); the loop minimises its negative mean with Adam.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint
from . import config as configlib
from .data import Loader
from .gap import ACTIVE_UNIT_THRESHOLD
from .models import LinearGaussian, build_model
from .models.rbm import base_rate_bias, centre_gradients, update_offsets
from .objectives import iwae_bound
from .runs import Splits, default_run_dir, prepare_data, resolve_device, seeded_stream


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def vae_step(model, x: torch.Tensor, cfg: configlib.TrainConfig) -> torch.Tensor:
    """The ELBO with analytic KL, or the IWAE bound L_K, per example [B]."""
    if cfg.objective == "iwae":
        return iwae_bound(model.log_weights(x, cfg.num_samples))
    return model.elbo(x, cfg.num_samples)


def linear_step(model, x: torch.Tensor, cfg: configlib.TrainConfig) -> torch.Tensor:
    """The exact log-likelihood log N(x; mu, L L^T + Psi): gradient ascent on log p itself. [B]."""
    return model.log_prob(x)


linear_step.bound_name = "log_px"  # what the logged training value is; the VAE step logs its objective


def rbm_step(model, x: torch.Tensor, cfg: configlib.TrainConfig) -> torch.Tensor:
    """CD-k (Hinton 2002) or PCD-k (Tieleman 2008): per example -F(x) + mean F(v-), v- the negative
    samples after cfg.cd_steps Gibbs sweeps from the data or the persistent chains. Its gradient is the
    contrastive-divergence estimate of d log p(x); its value is the free-energy gap, not a bound. With
    cfg.centering > 0 the offsets move first and `rbm_step.precondition` centres the gradient. [B]."""
    if cfg.centering:
        update_offsets(model, x, cfg.centering)
    start = model.persistent_chains(x) if cfg.persistent else x
    negative = model.gibbs(start, cfg.cd_steps)
    if cfg.persistent:
        model.chains.copy_(negative)
    return -model.free_energy(x) + model.free_energy(negative).mean()


def rbm_precondition(model, cfg: configlib.TrainConfig) -> None:
    if cfg.centering:
        centre_gradients(model)


rbm_step.bound_name = "free_energy_gap"
rbm_step.precondition = rbm_precondition  # called between backward() and the optimizer step

STEPS: dict[str, Callable[..., torch.Tensor]] = {"vae": vae_step, "linear": linear_step, "rbm": rbm_step}


def lr_factor(cfg: configlib.TrainConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base lr at `step`: linear warm-up, then constant, cosine or linear decay
    from 1 to cfg.lr_final_factor."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    t = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    decay = {"cosine": 0.5 * (1 + math.cos(math.pi * t)), "linear": 1 - t}[cfg.lr_schedule]
    return cfg.lr_final_factor + (1 - cfg.lr_final_factor) * decay


def make_optimizer(model: torch.nn.Module, cfg: configlib.TrainConfig, device: torch.device):
    # The fused kernels are one pass over all parameters: several times faster than the loop on CPU.
    fused = device.type in ("cpu", "cuda")
    # weight decay on weight matrices only: decaying biases would pull an RBM's background pixels to p = 0.5
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, fused=fused)


@torch.no_grad()
def rbm_terms(model, x: torch.Tensor, cfg: configlib.EvalConfig) -> dict[str, float]:
    """Cheap held-out terms of an RBM: mean free energy, and the squared error of a one-sweep
    mean-field reconstruction p(v|h ~ p(h|v))."""
    free_energy = error = 0.0
    for xb in x.split(cfg.batch_size):
        free_energy += float(model.free_energy(xb).sum())
        error += float((model.visible_given_hidden(model.hidden_given_visible(xb).sample()).mean - xb).pow(2).sum())
    return {"free_energy": free_energy / x.shape[0], "reconstruction_error": error / x.shape[0]}


@torch.no_grad()
def held_out_terms(model, x: torch.Tensor, cfg: configlib.EvalConfig) -> dict[str, float]:
    """The cheap gap terms on a held-out set [N, D]: mean ELBO (analytic KL, one sample), its KL term,
    the number of active latent units (Burda et al. 2016: Cov_x(E_q[z_j]) > 0.01), and on the first
    cfg.monitor_examples points the IWAE bound with K = cfg.monitor_samples (and the exact log p(x)
    where the model has one): the gap as it evolves."""
    model.eval()
    elbo = kl = 0.0
    means = []
    for xb in x.split(cfg.batch_size):
        reconstruction, kl_b = model.elbo_terms(xb)
        elbo += float((reconstruction - kl_b).sum())
        kl += float(kl_b.sum())
        means.append(model.encode_mean(xb))
    terms = {"elbo": elbo / x.shape[0], "kl": kl / x.shape[0],
             "active_units": int((torch.cat(means).var(dim=0) > ACTIVE_UNIT_THRESHOLD).sum())}
    subset = x[:cfg.monitor_examples]
    if cfg.monitor_samples and subset.shape[0]:
        k = cfg.monitor_samples
        bound = sum(float(iwae_bound(model.log_weights(xb, k)).sum()) for xb in subset.split(cfg.batch_size))
        terms[f"iwae{k}"] = bound / subset.shape[0]
        if hasattr(model, "log_prob"):
            terms["log_px"] = float(model.log_prob(subset).mean())
    model.train()
    return terms


def rng_tensors(loader: Loader) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state(), **{f"loader.{k}": v for k, v in loader.state_dict().items()}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(states: dict[str, torch.Tensor], loader: Loader) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"].cpu())
    loader.load_state_dict({k[len("loader."):]: v.cpu() for k, v in states.items() if k.startswith("loader.")})


# per family: the terms logged on held-out data each epoch (default: the latent-variable gap terms)
MONITORS: dict[str, Callable[..., dict[str, float]]] = {"rbm": rbm_terms}


class Trainer:
    """Holds the state of one run; `fit()` runs the loop from wherever the run folder left off."""

    def __init__(self, cfg: configlib.RunConfig, run_dir: str | Path | None = None, resume: bool = False,
                 data: Splits | None = None, save: bool = True):
        """data: in-memory splits instead of the data set cfg.data names (arrays: runs.as_image_set);
        save=False keeps everything in memory: no run folder, checkpoints or metrics file (`history`)."""
        self.cfg, t = cfg, cfg.train
        self.save, self.history = save, []
        self.run_dir = Path(run_dir or cfg.out or default_run_dir(cfg)) if save else None
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        # Adam's second moments underflow into denormals after an epoch or so; on x86 CPUs arithmetic on
        # them is >10x slower. Flushing them to zero changes nothing measurable in the result. The flag
        # is per thread and worker threads copy it when they start: set it before any parallel work.
        torch.set_flush_denormal(True)
        torch.manual_seed(t.seed)
        self.device = resolve_device(t.device)
        self.data = prepare_data(cfg, self.device) if data is None else data
        self.loader = Loader(self.data.train, t.batch_size, binarization=cfg.data.binarization,
                             shuffle=True, seed=t.seed, drop_last=False)
        self.model = build_model(cfg.model, self.data.train.x.shape[1]).to(self.device)
        if cfg.model.init == "ppca":
            fitted = LinearGaussian.fit_ppca(self.data.train.x, cfg.model.latent, cfg.model.min_scale)
            self.model.load_state_dict(fitted.state_dict())
        elif cfg.model.init == "base_rate":  # Hinton 2010, "A practical guide to training RBMs", section 8
            with torch.no_grad():
                self.model.visible_bias.copy_(base_rate_bias(self.data.train.x))
                self.model.visible_offset.copy_(self.data.train.x.float().mean(0))
        self.step_fn = STEPS[cfg.model.name]
        self.bound_name = getattr(self.step_fn, "bound_name", t.objective)
        self.precondition = getattr(self.step_fn, "precondition", None)
        if t.compile:
            self.step_fn = torch.compile(self.step_fn, dynamic=False)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.total_steps = t.epochs * len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(t, step, self.total_steps))
        self.epoch, self.step = 0, 0
        if resume:
            self.load_checkpoint()
        elif save:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            configlib.save(cfg, self.run_dir / "config.json")

    def save_checkpoint(self) -> None:
        opt_tensors, opt_meta = checkpoint.optimizer_tensors(self.optimizer.state_dict())
        meta = {"epoch": self.epoch, "step": self.step, "data_dim": self.data.train.x.shape[1],
                "image_shape": list(self.data.train.image_shape), "optimizer": opt_meta,
                "scheduler": self.scheduler.state_dict(), "config": configlib.to_dict(self.cfg)}
        tensors = {"model": self.model.state_dict(), "optimizer": opt_tensors, "rng": rng_tensors(self.loader)}
        checkpoint.save(self.run_dir, tensors, meta)

    def load_checkpoint(self) -> None:
        groups, meta = checkpoint.load(self.run_dir, device=self.device)
        self.model.load_state_dict(groups["model"])
        self.optimizer.load_state_dict(checkpoint.optimizer_state(groups.get("optimizer", {}), meta["optimizer"]))
        self.scheduler.load_state_dict(meta["scheduler"])
        restore_rng(groups["rng"], self.loader)
        self.epoch, self.step = meta["epoch"], meta["step"]

    def train_step(self, x: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch x [B, D]; returns the per-example training bound [B]."""
        bound = self.step_fn(self.model, x, self.cfg.train)
        loss = -bound.mean()
        if not torch.isfinite(loss):
            where = f"; the last good checkpoint in {str(self.run_dir)!r} is from epoch {self.epoch}" if self.save else ""
            raise TrainingDiverged(f"non-finite loss {float(loss.detach())} at epoch {self.epoch + 1}, "
                                   f"step {self.step + 1}{where}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.precondition is not None:
            self.precondition(self.model, self.cfg.train)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return bound.detach()

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training data; returns the mean training bound and throughput."""
        self.model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}", leave=False,
                   disable=not self.cfg.train.progress, mininterval=0.5)
        for x in bar:
            total += float(self.train_step(x).sum())
            count += x.shape[0]
            if self.step % 20 == 0:
                bar.set_postfix(loss=f"{-total / count:.2f}", img_s=f"{count / (time.perf_counter() - start):.0f}")
        seconds = time.perf_counter() - start
        return {f"train/{self.bound_name}": total / count, "images_per_s": count / seconds,
                "epoch_s": seconds}

    def log(self, row: dict) -> None:
        self.history.append(row)
        if self.save:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def fit(self) -> Path:
        """Train until cfg.train.epochs, validating, logging and checkpointing each epoch."""
        t = self.cfg.train
        if self.step == 0:  # a fresh run: its draws must not depend on what ran since __init__
            torch.manual_seed(t.seed)
        start = time.perf_counter()
        while self.epoch < t.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            row = self.train_epoch()
            held_name, held = ("valid", self.data.valid) if self.data.valid is not None else ("test", self.data.test)
            if held is not None:
                # on its own random stream: monitoring more or less must not change the training run
                with seeded_stream(self.cfg.eval.seed + self.epoch, self.device):
                    terms = MONITORS.get(self.cfg.model.name, held_out_terms)(self.model, held.x, self.cfg.eval)
                row.update({f"{held_name}/{k}": v for k, v in terms.items()})
            self.epoch += 1
            self.log({"epoch": self.epoch, "step": self.step, "lr": lr, **row})
            if t.progress and (self.epoch % max(1, t.epochs // 20) == 0 or self.epoch == t.epochs):
                held_text = "".join(f"  {k} {v:9.3f}" for k, v in list(row.items())[3:5])
                print(f"epoch {self.epoch:4d}  train {self.bound_name} {row[f'train/{self.bound_name}']:9.3f}"
                      f"{held_text}  {row['images_per_s']:8.0f} img/s", flush=True)
            out_of_time = t.time_limit_minutes > 0 and time.perf_counter() - start > 60 * t.time_limit_minutes
            if self.save and (self.epoch % t.checkpoint_every == 0 or self.epoch == t.epochs or out_of_time):
                self.save_checkpoint()
            if out_of_time:
                print(f"stopped after epoch {self.epoch} of {t.epochs}: train.time_limit_minutes="
                      f"{t.time_limit_minutes} reached", flush=True)
                break
        return self.run_dir


def train(cfg: configlib.RunConfig, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train the model a config describes; returns the run folder."""
    return Trainer(cfg, run_dir, resume).fit()
