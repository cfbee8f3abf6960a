"""One training loop for every model family.

A family's step (vaekit.families) receives a StepState (the model, one optimizer per player, the
config, the number of updates so far) and a batch, makes its own updates, and returns named per-batch
metrics; the loop does the rest for every family: epochs, batches, learning-rate schedules, logging,
held-out monitoring, checkpoints, the stop on a non-finite loss, resume, progress.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint
from . import config as configlib
from . import families
from .data import DataSpec, Loader
from .runs import (Splits, create_run_dir, hardware_text, load_weights, lock_run_dir, prepare_data,
                   resolve_device, seeded_stream)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; its message says where the last checkpoint is and how to go on."""


@dataclass
class StepState:
    """What a family's step works with: the model, its optimizers by player name, the run's config
    and the number of loop steps done so far."""

    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    cfg: configlib.RunConfig
    step: int = 0
    compiled: dict = field(default_factory=dict)

    def maybe_compile(self, fn: Callable) -> Callable:
        """fn, torch.compile'd once when train.compile asks for it."""
        if not self.cfg.train.compile:
            return fn
        if fn not in self.compiled:
            self.compiled[fn] = torch.compile(fn, dynamic=False)
        return self.compiled[fn]


def minimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer, name: str = "loss",
             precondition: Callable[[], None] | None = None) -> None:
    """One gradient step on a scalar loss; a non-finite loss stops training before it touches the
    parameters. `precondition` may rewrite the gradients between backward() and the step."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"non-finite {name} {float(loss.detach())}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if precondition is not None:
        precondition()
    optimizer.step()


def ascend(state: StepState, objective: Callable, x: torch.Tensor, name: str,
           precondition: Callable[[], None] | None = None, args: tuple = ()) -> dict[str, torch.Tensor]:
    """The single-loss step: maximise the per-example objective(model, x, cfg, *args) [B] by one step of
    the model's optimizer; the logged metric is the objective itself (a bound, log p, ...), not its
    negative. args: tensors that change from step to step (a compiled objective is not recompiled)."""
    value = state.maybe_compile(objective)(state.model, x, state.cfg, *args)
    minimise(-value.mean(), state.optimizers["model"], f"train/{name}", precondition)
    return {name: value.detach().mean()}


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



EXPLODING = 100.0  # an objective this many times its size at the start (at least EXPLODING_FLOOR): warned about
EXPLODING_FLOOR = 10.0


def finite_or_null(row: dict) -> dict:
    """A log row with NaN and infinities as None: metrics.jsonl stays valid JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl; a torn last line (a process killed while writing it) is dropped, a
    damaged line elsewhere is an error naming the file and line."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{str(path)!r}, line {number}: not valid JSON") from None
    return rows


def _metric_sums(totals: dict, counts: dict, metrics: dict[str, torch.Tensor], n: int) -> None:
    """Accumulate per-batch means weighted by the batch size, on the metrics' device (no sync)."""
    for name, value in metrics.items():
        totals[name] = totals.get(name, 0.0) + value.detach() * n
        counts[name] = counts.get(name, 0) + n


class Trainer:
    """Holds the state of one run; `fit()` runs the loop from wherever the run folder left off.

    Process-wide settings (threads, denormal flush) are made by vaekit.runs.configure_process, which
    the CLI and the library entry points call; the Trainer draws its model's initial weights on a
    stream seeded by train.seed and leaves the global one alone."""

    def __init__(self, cfg: configlib.RunConfig, run_dir: str | Path | None = None, resume: bool = False,
                 data: Splits | None = None, save: bool = True, force: bool = False):
        """run_dir (else cfg.out, else a fresh runs/<data>-<model>-<time>): a new run refuses a folder that
        holds files unless force=True, which moves them aside; resume=True continues the run there and
        refuses changed settings other than configlib.RESUMABLE. data: in-memory splits instead of the
        data set cfg.data names (arrays: runs.as_image_set); save=False keeps everything in memory: no
        run folder, checkpoints or metrics file (`history`)."""
        self.cfg, t = cfg, cfg.train
        self.family = families.get(cfg.model.name)
        self.save, self.history = save, []
        if resume and not (run_dir or cfg.out):
            raise ValueError("resume=True needs the run folder (run_dir or cfg.out)")
        self.run_dir = Path(run_dir or cfg.out) if (run_dir or cfg.out) else None
        self.device = resolve_device(t.device)
        # before anything in the folder is read (a missing folder is read_checkpoint's error to report)
        self._lock = lock_run_dir(self.run_dir) if resume and self.run_dir.is_dir() else None
        # changed settings are refused before the data are read: a refusal needs no data set at hand
        saved = self.read_checkpoint() if resume else None
        self.data = prepare_data(cfg, self.device) if data is None else data
        self.loader = Loader(self.data.train, t.batch_size, binarization=cfg.data.binarization,
                             shuffle=True, seed=t.seed, drop_last=False)
        self.spec = DataSpec.of(self.data.train, cfg.data.binarization)
        with seeded_stream(t.seed, "cpu"):  # the initial weights depend on the seed alone
            self.model = self.family.build(cfg.family, self.spec).to(self.device)
        if self.family.init is not None:
            self.family.init(self.model, self.data, cfg.family)
        self.optimizers = {name: make_optimizer(module, t, self.device)
                           for name, module in self.family.players(self.model).items()}
        self.total_steps = t.epochs * len(self.loader)
        self.state = StepState(self.model, self.optimizers, cfg)
        self.epoch, self.initial = 0, {}
        if resume:
            self.load_checkpoint(*saved)
        elif save:
            self.run_dir = create_run_dir(self.run_dir, cfg, force)
            self._lock = lock_run_dir(self.run_dir)
            configlib.save(cfg, self.run_dir / "config.json")

    @property
    def step(self) -> int:
        return self.state.step

    def __getstate__(self) -> dict:
        # pickle (a fitted vaekit.estimators estimator, joblib): the Family record holds lambdas, which
        # pickle cannot store; keep its name and look the family up again on load
        return {**self.__dict__, "family": self.family.name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.family = families.get(state["family"])

    def save_checkpoint(self) -> None:
        tensors = {"model": self.model.state_dict(), "rng": rng_tensors(self.loader)}
        optimizers = {}
        for name, optimizer in self.optimizers.items():
            tensors[f"optimizer.{name}"], optimizers[name] = checkpoint.optimizer_tensors(optimizer.state_dict())
        meta = {"epoch": self.epoch, "step": self.step, "family": self.family.name,
                "data_dim": self.spec.num_dims, "image_shape": list(self.spec.image_shape),
                "binary": self.spec.binary, "optimizers": optimizers, "initial_metrics": finite_or_null(self.initial),
                "config": configlib.to_dict(self.cfg)}
        checkpoint.save(self.run_dir, tensors, meta)
        # config.json follows the checkpoint: a resume's allowed changes become the run's config here
        checkpoint.atomic_write(self.run_dir / "config.json", lambda tmp: configlib.save(self.cfg, tmp))

    def read_checkpoint(self) -> tuple[dict, dict, dict]:
        """(tensor groups, metadata, allowed changes) of the run folder's checkpoint, after clearing
        interrupted writes; changed settings other than configlib.RESUMABLE are refused here."""
        checkpoint.remove_stale_temporaries(self.run_dir)
        groups, meta = checkpoint.load(self.run_dir, device=self.device)
        saved = configlib.from_dict(configlib.migrate(meta["config"]))
        return groups, meta, configlib.resume_changes(saved, self.cfg)

    def load_checkpoint(self, groups: dict, meta: dict, changes: dict) -> None:
        """Continue from read_checkpoint's result: record allowed changes in changes.jsonl, load the
        weights, optimizers and random states, drop metrics rows written after the checkpoint."""
        if changes:
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "epoch": meta["epoch"], "changes": changes}
            with open(self.run_dir / "changes.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        load_weights(self.model, groups["model"], self.run_dir)
        if "optimizers" not in meta:  # written before families had several players: one optimizer
            groups["optimizer.model"] = groups.pop("optimizer", {})
            meta["optimizers"] = {"model": meta["optimizer"]}
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint.optimizer_state(groups.get(f"optimizer.{name}", {}),
                                                                 meta["optimizers"][name]))
        restore_rng(groups["rng"], self.loader)
        self.epoch, self.state.step = meta["epoch"], meta["step"]
        self.initial = {k: math.nan if v is None else v for k, v in meta.get("initial_metrics", {}).items()}
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.is_file():
            rows = read_rows(metrics)
            # rows of epochs after the checkpoint will be trained again: each epoch appears once
            self.history = [row for row in rows if row.get("epoch", 0) <= self.epoch]
            if len(self.history) < len(rows):
                text = "".join(json.dumps(row) + "\n" for row in self.history)
                checkpoint.atomic_write(metrics, lambda tmp: Path(tmp).write_text(text))

    def lr(self) -> float:
        """The learning rate of the next step: train.lr times the schedule (a function of the step alone,
        so a resumed run needs no scheduler state)."""
        return self.cfg.train.lr * lr_factor(self.cfg.train, self.step, self.total_steps)

    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The family's step on the batch x [B, D] at the scheduled learning rate; returns its metrics."""
        lr = self.lr()
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        try:
            metrics = self.family.step(self.state, x)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e} at epoch {self.epoch + 1}, step {self.step + 1}{self._last_good()}") from None
        if self.step == 0:  # the objective before any update: the yardstick of an exploding run
            self.initial = {name: float(v) for name, v in metrics.items()}
        self.state.step += 1
        return metrics

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training data; returns the mean of each step metric and throughput."""
        self.model.train()
        totals, counts, start = {}, {}, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}", leave=False,
                   disable=not (self.cfg.train.progress and sys.stderr.isatty()), mininterval=0.5)
        for x in bar:
            _metric_sums(totals, counts, self.train_step(x), x.shape[0])
            if self.step % 20 == 0 and totals:
                name = next(iter(totals))
                bar.set_postfix({name: f"{float(totals[name]) / counts[name]:.2f}",
                                 "img_s": f"{max(counts.values()) / (time.perf_counter() - start):.0f}"})
        seconds = time.perf_counter() - start
        row = {f"train/{name}": float(total) / counts[name] for name, total in totals.items()}
        return {**row, "images_per_s": len(self.loader.data) / seconds, "epoch_s": seconds}

    def _last_good(self) -> str:
        """Where training can restart after a failure, for the error message."""
        if not self.save:
            return ""
        meta = checkpoint.metadata(self.run_dir)
        if meta is None:
            return f"; no checkpoint was written in {str(self.run_dir)!r} yet"
        return f"; the last good checkpoint in {str(self.run_dir)!r} is from epoch {meta['epoch']}"

    def log(self, row: dict) -> None:
        self.history.append(row)
        if self.save:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(finite_or_null(row), allow_nan=False) + "\n")

    def exploding(self, row: dict) -> list[str]:
        """A warning when the epoch's objective (a step's first metric) is orders of magnitude worse than
        before the first update: the optimisation diverges while every number is still finite."""
        if not self.initial:
            return []
        name, start = next(iter(self.initial.items()))
        value = row.get(f"train/{name}")
        scale = max(EXPLODING_FLOOR, abs(start))  # an objective near 0 at the start (a CD gap) may still wander
        if value is None or not math.isfinite(start) or abs(value) <= EXPLODING * scale:
            return []
        return [f"train/{name} is {value:.3g}, {abs(value) / scale:.0f} times the size of its start ({start:.3g}): "
                "the optimisation is exploding (a smaller train.lr?)"]

    def held_out_row(self) -> dict[str, float]:
        """The family's held-out monitor on validation data (test data when there is none: logged for
        monitoring only), on its own random stream: monitoring more or less must not change training."""
        held_name, held = ("valid", self.data.valid) if self.data.valid is not None else ("test", self.data.test)
        if held is None or self.family.monitor is None:
            return {}
        with seeded_stream(self.cfg.eval.seed + self.epoch, self.device):
            terms = self.family.monitor(self.model, held.x, self.cfg)
        return {f"{held_name}/{k}": v for k, v in terms.items()}

    def report(self, row: dict) -> None:
        """One progress line every twentieth of the run (every epoch when the output is no terminal and
        so has no progress bar), and any warning at once."""
        t = self.cfg.train
        for warning in row.get("warnings", []):
            print(f"warning, epoch {self.epoch}: {warning}", flush=True)
        every = max(1, t.epochs // 20) if sys.stderr.isatty() else 1
        if t.progress and (self.epoch % every == 0 or self.epoch == t.epochs):
            values = [(k, v) for k, v in row.items() if "/" in k and isinstance(v, (int, float))]
            text = "".join(f"  {k} {v:9.3f}" for k, v in values[:4])
            print(f"epoch {self.epoch:4d}{text}  {row['images_per_s']:8.0f} img/s", flush=True)

    def fit(self) -> Path | None:
        """Train until cfg.train.epochs, monitoring, logging and checkpointing each epoch."""
        try:
            return self._fit()
        except KeyboardInterrupt:
            if not self.save:
                raise
            raise TrainingInterrupted(f"interrupted in epoch {self.epoch + 1}{self._last_good()}; go on with: "
                                      f"vaekit train --resume {self.run_dir}") from None
        finally:
            self.release()

    def release(self) -> None:
        """Let another process train in the run folder (fit does this when it ends)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.close()
            self._lock = None

    def _fit(self) -> Path | None:
        t = self.cfg.train
        if self.step == 0:  # a fresh run: its draws must not depend on what ran since __init__
            torch.manual_seed(t.seed)
        start = time.perf_counter()
        while self.epoch < t.epochs:
            lr = self.lr()
            row = self.train_epoch()
            out_of_time = t.time_limit_minutes > 0 and time.perf_counter() - start > 60 * t.time_limit_minutes
            if (self.epoch + 1) % self.cfg.eval.monitor_every == 0 or self.epoch + 1 == t.epochs or out_of_time:
                row.update(self.held_out_row())
            self.epoch += 1
            row = {"epoch": self.epoch, "step": self.step, "lr": lr, **row,
                   "hardware": hardware_text(self.device)}
            warnings = self.exploding(row) + (self.family.diagnose([*self.history, row]) if self.family.diagnose else [])
            if warnings:
                row["warnings"] = warnings
            self.log(row)
            self.report(row)
            broken = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
            if broken:  # before the checkpoint: the last one written stays the last good one
                raise TrainingDiverged(f"non-finite {', '.join(broken)} at epoch {self.epoch}{self._last_good()}")
            if self.family.epoch_end is not None:
                self.family.epoch_end(self)
            if self.save and (self.epoch % t.checkpoint_every == 0 or self.epoch == t.epochs or out_of_time):
                self.save_checkpoint()
            if out_of_time:
                print(f"stopped after epoch {self.epoch} of {t.epochs}: train.time_limit_minutes="
                      f"{t.time_limit_minutes} reached", flush=True)
                break
        return self.run_dir


def train(cfg: configlib.RunConfig, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train the model a config describes; returns the run folder."""
    from .runs import configure_process
    configure_process(cfg.train)
    return Trainer(cfg, run_dir, resume).fit()
