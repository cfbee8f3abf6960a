"""scikit-learn style estimators over vaekit's models: fit / partial_fit / transform / score_samples on
in-memory arrays, trained by the same loop, step functions and optimizers as the command line.

    from vaekit.estimators import BernoulliRBM
    rbm = BernoulliRBM(n_components=64, n_iter=20, centering=0.01).fit(X)   # X [n_samples, n_features] in [0, 1]
    features = rbm.transform(X)        # p(h = 1 | v)
    log_p = rbm.score_samples(X)       # log p(v) in nats, log Z by AIS (exact for small models)

The vocabulary is that of sklearn.neural_network.BernoulliRBM, with two differences a user should know:
score_samples is the log-likelihood log p(v) = -F(v) - log Z (sklearn's is a pseudo-likelihood), and the
gradient can be centred (Melchior, Fischer & Wiskott 2016).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from . import config as configlib
from .annealing import EXACT_UNITS, best_log_partition, log_partition
from .models.rbm import base_rate_bias
from .runs import Splits, as_image_set, configure_process, seeded_stream
from .train import Trainer

# config key -> estimator parameter, so that errors name what the user passed
PARAMETERS = {"rbm.num_hidden": "n_components", "train.lr": "learning_rate", "train.batch_size": "batch_size",
              "train.epochs": "n_iter", "rbm.cd_steps": "cd_steps", "rbm.num_chains": "n_chains",
              "rbm.centering": "centering", "train.momentum": "momentum", "train.weight_decay": "weight_decay",
              "eval.ais_betas": "ais_betas", "eval.ais_runs": "ais_runs", "train.device": "device",
              "rbm.persistent": "persistent", "train.seed": "random_state"}


class BernoulliRBM(TransformerMixin, BaseEstimator):
    """Bernoulli RBM (vaekit.models.RBM) trained by CD-k or PCD-k with SGD.

    n_components: hidden units; learning_rate, momentum, weight_decay: SGD; batch_size; n_iter: epochs of
    fit; cd_steps: Gibbs sweeps per update (k); persistent: PCD (Tieleman 2008) with n_chains chains, else
    CD; centering: offset rate of the centred gradient (0 = plain); ais_betas, ais_runs: the annealed
    importance sampling behind score_samples; device: "cpu", "cuda" or "auto"; random_state: int or None.
    Visible biases start at the log-odds of the first data seen (Hinton 2010). log Z is enumerated when
    the smaller layer has at most `exact_units` units, else estimated by AIS. Fitted attributes:
    components_ [H, V], intercept_hidden_ [H], intercept_visible_ [V], model_ (the torch module).
    """

    exact_units = EXACT_UNITS  # enumerate log Z up to this size of the smaller layer

    def __init__(self, n_components: int = 256, learning_rate: float = 0.1, batch_size: int = 100,
                 n_iter: int = 10, cd_steps: int = 1, persistent: bool = True, n_chains: int = 100,
                 centering: float = 0.0, momentum: float = 0.0, weight_decay: float = 0.0,
                 ais_betas: int = 10000, ais_runs: int = 100, device: str = "cpu", random_state=None,
                 verbose: int = 0):
        self.n_components, self.learning_rate, self.batch_size, self.n_iter = n_components, learning_rate, batch_size, n_iter
        self.cd_steps, self.persistent, self.n_chains, self.centering = cd_steps, persistent, n_chains, centering
        self.momentum, self.weight_decay, self.ais_betas, self.ais_runs = momentum, weight_decay, ais_betas, ais_runs
        self.device, self.random_state, self.verbose = device, random_state, verbose

    def _config(self) -> configlib.RunConfig:
        seed = self.random_state if self.random_state is not None else int(np.random.randint(2**31 - 1))
        values = {"data": {"name": "npy", "binarization": "none", "allow_nonbinary_bernoulli": True},
                  "model": {"name": "rbm"},
                  "rbm": {"num_hidden": self.n_components, "num_chains": self.n_chains, "init": "base_rate",
                          "cd_steps": self.cd_steps, "persistent": self.persistent, "centering": self.centering},
                  "train": {"epochs": self.n_iter, "batch_size": self.batch_size, "lr": self.learning_rate,
                            "lr_schedule": "constant", "optimizer": "sgd", "momentum": self.momentum,
                            "weight_decay": self.weight_decay, "seed": seed,
                            "device": self.device, "progress": bool(self.verbose)},
                  "eval": {"ais_betas": self.ais_betas, "ais_runs": self.ais_runs}}
        try:
            return configlib.from_dict(values)
        except configlib.ConfigError as e:
            message = str(e)
            for key, name in PARAMETERS.items():
                message = message.replace(key, name)
            raise ValueError(f"BernoulliRBM: {message}") from None

    def _start(self, X) -> torch.Tensor:
        """A fresh model and trainer whose training data is X; returns X as a tensor."""
        cfg = self._config()
        configure_process(cfg.train)
        data = as_image_set(X, "X", self.device if self.device != "auto" else "cpu")
        self.trainer_ = Trainer(cfg, data=Splits(data, None, None), save=False)
        self.n_features_in_ = data.x.shape[1]
        self._log_z = None
        return data.x

    def _check(self, X, name: str = "X") -> torch.Tensor:
        if not hasattr(self, "trainer_"):
            raise NotFittedError("This BernoulliRBM instance is not fitted yet: call fit or partial_fit first")
        x = as_image_set(X, name, self.trainer_.device).x
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"{name} has {x.shape[1]} features, but BernoulliRBM was fitted with "
                             f"{self.n_features_in_} features")
        return x

    def fit(self, X, y=None) -> "BernoulliRBM":
        """n_iter epochs of mini-batch updates over X [n_samples, n_features] (values in [0, 1])."""
        self._start(X)
        self.trainer_.fit()
        return self

    def partial_fit(self, X, y=None) -> "BernoulliRBM":
        """One update with X [n_samples, n_features] as the mini-batch (a fresh model on the first call)."""
        x = self._check(X) if hasattr(self, "trainer_") else self._start(X)
        self.trainer_.model.train()
        self.trainer_.train_step(x)
        self._log_z = None
        return self

    @property
    def model_(self):
        if not hasattr(self, "trainer_"):
            raise AttributeError("model_: the estimator is not fitted")
        return self.trainer_.model

    components_ = property(lambda self: self.model_.weight.detach().T.cpu().numpy())
    intercept_hidden_ = property(lambda self: self.model_.hidden_bias.detach().cpu().numpy())
    intercept_visible_ = property(lambda self: self.model_.visible_bias.detach().cpu().numpy())

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """p(h_j = 1 | v) for every row of X: [n_samples, n_components]."""
        return self.model_.hidden_given_visible(self._check(X)).mean.cpu().numpy()

    @torch.no_grad()
    def gibbs(self, v) -> np.ndarray:
        """One block Gibbs sweep v -> h -> v' from each row of v; returns v' as a bool array."""
        return self.model_.gibbs(self._check(v, "v"), 1).cpu().numpy().astype(bool)

    @torch.no_grad()
    def sample(self, n_samples: int = 1, n_steps: int = 1000) -> np.ndarray:
        """p(v | h) means after n_steps Gibbs sweeps from noise: [n_samples, n_features]."""
        return self.model_.sample(n_samples, n_steps).cpu().numpy()

    @torch.no_grad()
    def log_partition(self) -> tuple[float, float]:
        """(log Z, its standard error): exact when the smaller layer has at most exact_units units (error 0), else
        forward AIS from the base-rate RBM of the training data (Salakhutdinov & Murray 2008). Cached
        until the next partial_fit."""
        if self._log_z is None:
            cfg = self.trainer_.cfg.eval
            with seeded_stream(cfg.seed, self.trainer_.device):
                results = log_partition(self.model_, base_rate_bias(self.trainer_.data.train.x), cfg.ais_betas,
                                        cfg.ais_runs, exact_units=self.exact_units)
            best = best_log_partition(results)
            self._log_z = (best.value, best.stderr)
        return self._log_z

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """log p(v) = -F(v) - log Z in nats for every row of X (binary rows: the log-likelihood). [n_samples]."""
        x = self._check(X)
        return (-self.model_.free_energy(x).double() - self.log_partition()[0]).cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the rows of X, nats."""
        return float(self.score_samples(X).mean())
