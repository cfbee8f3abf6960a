"""scikit-learn estimators over vaekit's models: fit / partial_fit / transform / score_samples / sample on
in-memory arrays, trained by the same Trainer, step functions and optimizers as the command line.

    from vaekit.estimators import GAN, VAE, BernoulliRBM
    rbm = BernoulliRBM(n_components=64, n_iter=20, centering=0.01).fit(X)   # X [n_samples, n_features] in [0, 1]
    features = rbm.transform(X)        # p(h = 1 | v)
    log_p = rbm.score_samples(X)       # log p(v) in nats, log Z by AIS (exact for small models)
    vae = VAE(n_components=2, n_iter=50).fit(X)
    z, x_mean, log_p = vae.transform(X), vae.inverse_transform(z), vae.score_samples(X)
    images = GAN(n_iter=25).fit(X).sample(64)

BernoulliRBM is a drop-in replacement for sklearn.neural_network.BernoulliRBM: the same parameters,
fitted attributes, dtype handling, sparse input and errors, with two differences a user should know:
score_samples is the log-likelihood log p(v) = -F(v) - log Z (sklearn's is a pseudo-likelihood), and
the gradient can be centred (Melchior, Fischer & Wiskott 2016).

What every estimator here shares:
- input: array-likes, pandas DataFrames (feature_names_in_ is kept) and scipy.sparse matrices, checked by
  sklearn's validate_data (NaN, inf, complex, object, empty and wrong feature counts raise sklearn's
  errors); the values must lie in [0, 1] (pixel intensities, Bernoulli means), else a ValueError.
- sparse input is densified: whole by fit (the Trainer holds its training set as one dense float32
  tensor), ROWS_AT_ONCE rows at a time by every other method.
- the models compute in float32; the fitted arrays (components_, ...) and samples have the dtype of the
  data fit saw (float32 or float64; anything else becomes float64), and transform's output numpy's
  promotion of it and the input's, as sklearn's BernoulliRBM: float32 -> float32, float64 -> float64.
- random_state (int, RandomState or None) seeds the Trainer: the same int gives the same model.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, check_non_negative, validate_data

from . import config as configlib
from .annealing import EXACT_UNITS, best_log_partition, log_partition
from .data import ImageSet
from .objectives import log_importance_weights, log_mean_exp_chunks
from .models.hvae import reparameterised
from .models.rbm import base_rate_bias
from .runs import Splits, as_image_set, configure_process, resolve_device, seeded_stream
from .train import Trainer

ROWS_AT_ONCE = 4096  # rows densified and moved to the device at a time outside fit: memory stays bounded
FLOATS = (np.float64, np.float32)  # dtypes kept as given; others (int, bool, object) become float64

# config key -> estimator parameter of every estimator, so that errors name what the user passed
SHARED_PARAMETERS = {"train.epochs": "n_iter", "train.batch_size": "batch_size", "train.lr": "learning_rate",
                     "train.device": "device", "train.seed": "random_state"}


def _plain(value):
    """numpy scalars as Python numbers and tuples as lists, in nested dicts: the types the config expects
    (a grid search passes np.int64 values)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _sizes(hidden_layer_sizes) -> list:
    """hidden_layer_sizes as MLPClassifier reads it: one int or a sequence of ints."""
    return [hidden_layer_sizes] if np.ndim(hidden_layer_sizes) == 0 else list(hidden_layer_sizes)


def _seed(random_state) -> int:
    """A training seed from random_state: an int is the seed itself, a RandomState (or None: numpy's
    global one) draws it, as sklearn's check_random_state does."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _check_unit_interval(X, whom: str) -> None:
    """Values in [0, 1], the domain of every model here (Bernoulli means, grey levels); X validated,
    dense or sparse."""
    check_non_negative(X, whom)
    high = (X.data.max() if X.data.size else 0) if sp.issparse(X) else X.max()
    if high > 1:
        raise ValueError(f"Values greater than 1 in data passed to {whom}: expected values in [0, 1] "
                         f"(pixel intensities or probabilities), found max {high:g}")


def _dense(X) -> torch.Tensor:
    """Validated X (dense or sparse) as a C-ordered float32 tensor of its own (a copy: X may be read-only;
    C order: the matmuls then sum in the same order whatever X's layout, so results do not depend on it)."""
    array = X.toarray() if sp.issparse(X) else X
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))


class GenerativeEstimator(BaseEstimator):
    """What the estimators share: the config built from the parameters, input validation, a Trainer
    on in-memory data, fit and partial_fit. A subclass names its family and its config sections."""

    family = ""  # the vaekit model family
    parameters: dict[str, str] = {}  # config key -> parameter, beyond SHARED_PARAMETERS

    def _sections(self) -> dict:
        """The family's config sections (and any train / eval keys of its own) from the parameters."""
        raise NotImplementedError

    def _config(self) -> configlib.RunConfig:
        """The run config of these parameters; a bad value is a ValueError naming the parameter."""
        sections = self._sections()
        train = {"epochs": self.n_iter, "batch_size": self.batch_size, "lr": self.learning_rate,
                 "lr_schedule": "constant", "seed": _seed(self.random_state), "device": self.device,
                 "progress": bool(self.verbose), **sections.pop("train", {})}
        values = {"data": {"name": "npy", "binarization": "none", "allow_nonbinary_bernoulli": True},
                  "model": {"name": self.family}, "train": train, **sections}
        try:
            cfg = configlib.from_dict(_plain(values))
            resolve_device(cfg.train.device)
            return cfg
        except ValueError as e:  # ConfigError, or a device that does not exist
            raise ValueError(f"{type(self).__name__}: {self._rename(str(e))}") from None

    def _rename(self, message: str) -> str:
        """A config error's keys replaced by the parameter names (longest keys first: prefixes)."""
        names = {**SHARED_PARAMETERS, **self.parameters}
        for key in sorted(names, key=len, reverse=True):
            message = message.replace(key, names[key])
        return message

    def _validate(self, X, method: str, reset: bool = False, dtype=FLOATS):
        """X checked as sklearn does (sparse CSR / CSC kept, as dtype: by default float32 kept, else
        float64) and for [0, 1]; reset=True records n_features_in_ (and feature_names_in_), else X must
        match them."""
        X = validate_data(self, X, reset=reset, accept_sparse=("csr", "csc"), dtype=dtype)
        _check_unit_interval(X, f"{type(self).__name__}.{method}")
        return X

    def _image_set(self, x: torch.Tensor, device: torch.device) -> ImageSet:
        """The training set as the Trainer takes it: flat rows, 1 x 1 x D images."""
        return as_image_set(x, "X", device)

    def _start(self, cfg: configlib.RunConfig, X) -> torch.Tensor:
        """A fresh model and trainer whose training data is the validated X; returns it on the device."""
        configure_process(cfg.train)
        data = self._image_set(_dense(X), resolve_device(cfg.train.device))
        self.trainer_ = Trainer(cfg, data=Splits(data, None, None), save=False)
        # every estimator's n_components is the width of its transform (hidden units, latent dimensions)
        self._dtype, self._n_features_out = X.dtype, self._width()
        self._rng = self._seeded_rng(cfg.train.seed)
        self._changed()
        return data.x

    def _width(self) -> int:
        """The width of transform (hidden units, latent dimensions): n_components."""
        return int(self.n_components)

    def _seeded_rng(self, seed: int) -> list[torch.Tensor]:
        """The random state of torch's generators on the CPU and the model's device, seeded."""
        with self._stream(None):
            torch.manual_seed(seed)
            return self._rng_state()

    def _rng_state(self) -> list[torch.Tensor]:
        device = self.trainer_.device
        return [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])

    @contextlib.contextmanager
    def _stream(self, state: list[torch.Tensor] | None):
        """Run a block on the estimator's own random stream (as sklearn's random_state_), from `state`
        (None: the global state), leaving torch's global stream as it was: a user's other draws do not
        change the model, and estimators updated in turn do not change each other's draws."""
        device = self.trainer_.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if state is not None:
                torch.set_rng_state(state[0])
                if device.type == "cuda":
                    torch.cuda.set_rng_state(state[1], device)
            yield

    def _update(self, update) -> None:
        """update() on the estimator's stream, which then moves on; cached values are dropped."""
        with self._stream(self._rng):
            update()
            self._rng = self._rng_state()
        self._changed()

    def _changed(self) -> None:
        """Called after every update: drop what was cached about the model."""

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "trainer_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True  # values in [0, 1]; those above 1 are refused too
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def fit(self, X, y=None):
        """n_iter epochs of mini-batch updates over X [n_samples, n_features] (values in [0, 1]); y is
        ignored. A sparse X is densified whole."""
        cfg = self._config()  # first: bad parameters leave the estimator as it was
        self._start(cfg, self._validate(X, "fit", reset=True))
        self._update(self.trainer_.fit)
        return self

    def partial_fit(self, X, y=None):
        """One update with X [n_samples, n_features] as the mini-batch (a fresh model on the first call,
        its data-dependent start, e.g. the RBM's base rates, from this batch). X is read as float64, as
        sklearn's BernoulliRBM.partial_fit does: the fitted arrays are then float64."""
        first = not hasattr(self, "trainer_")
        cfg = self._config() if first else None
        X = self._validate(X, "partial_fit", reset=first, dtype=np.float64)
        x = self._start(cfg, X) if first else _dense(X).to(self.trainer_.device)
        self.trainer_.model.train()
        self._update(lambda: self.trainer_.train_step(x))
        return self

    @property
    def model_(self) -> torch.nn.Module:
        """The trained torch module (vaekit.models)."""
        if not hasattr(self, "trainer_"):
            raise AttributeError(f"model_: this {type(self).__name__} is not fitted: call fit or partial_fit first")
        return self.trainer_.model

    def _rows(self, X, rows: int = ROWS_AT_ONCE):
        """Validated X as float32 tensors on the model's device, `rows` rows at a time."""
        for start in range(0, X.shape[0], rows):
            yield _dense(X[start:start + rows]).to(self.trainer_.device)

    def _numpy(self, tensor: torch.Tensor, like=None) -> np.ndarray:
        """A tensor as an array in the dtype of the data fit saw, promoted with that of the array `like`
        (the input of a transform), as numpy's arithmetic on them would be in sklearn's estimators."""
        dtype = self._dtype if like is None else np.result_type(like.dtype, self._dtype)
        return tensor.detach().cpu().numpy().astype(dtype, copy=False)

    def _draw(self, draw, random_state) -> np.ndarray:
        """draw() [N, D] on its own random stream seeded from random_state, as an array of the fit dtype."""
        check_is_fitted(self)
        with seeded_stream(_seed(random_state), self.trainer_.device), torch.no_grad():
            return self._numpy(draw())

    def _check_count(self, n_samples) -> int:
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples: expected a positive int, got {n_samples!r}")
        return int(n_samples)


class BernoulliRBM(ClassNamePrefixFeaturesOutMixin, TransformerMixin, GenerativeEstimator):
    """Bernoulli RBM (vaekit.models.RBM) trained by CD-k or PCD-k with SGD; sklearn's BernoulliRBM API.

    n_components: hidden units H; learning_rate, momentum, weight_decay: SGD; batch_size; n_iter: epochs
    of fit; cd_steps: Gibbs sweeps per update (k); persistent: PCD (Tieleman 2008) with n_chains chains,
    else CD; centering: offset rate of the centred gradient (0 = plain); ais_betas, ais_runs: the annealed
    importance sampling behind score_samples; device: "cpu", "cuda" or "auto"; random_state: int,
    RandomState or None; verbose: a line per epoch. Visible biases start at the log-odds of the first data
    seen (Hinton 2010). log Z is enumerated when the smaller layer has at most `exact_units` units, else
    estimated by AIS.

    Fitted attributes (copies of the model's parameters, in the dtype of the data fit saw):
    components_ [H, V], intercept_hidden_ [H], intercept_visible_ [V], h_samples_ [n_chains, H],
    n_features_in_, feature_names_in_ (fitted on a DataFrame), model_ (the torch module), trainer_.
    Differences from sklearn: batch_size defaults to 100 (sklearn: 10); score_samples is log p(v) in nats
    (sklearn: a pseudo-likelihood), in float64; n_iter must be >= 1.
    """

    family = "rbm"
    parameters = {"rbm.num_hidden": "n_components", "rbm.cd_steps": "cd_steps", "rbm.num_chains": "n_chains",
                  "rbm.centering": "centering", "train.momentum": "momentum", "train.weight_decay": "weight_decay",
                  "eval.ais_betas": "ais_betas", "eval.ais_runs": "ais_runs", "rbm.persistent": "persistent"}
    exact_units = EXACT_UNITS  # enumerate log Z up to this size of the smaller layer

    def __init__(self, n_components: int = 256, *, learning_rate: float = 0.1, batch_size: int = 100,
                 n_iter: int = 10, verbose: int = 0, random_state=None, cd_steps: int = 1, persistent: bool = True,
                 n_chains: int = 100, centering: float = 0.0, momentum: float = 0.0, weight_decay: float = 0.0,
                 ais_betas: int = 10000, ais_runs: int = 100, device: str = "cpu"):
        self.n_components, self.learning_rate, self.batch_size, self.n_iter = n_components, learning_rate, batch_size, n_iter
        self.verbose, self.random_state, self.cd_steps, self.persistent = verbose, random_state, cd_steps, persistent
        self.n_chains, self.centering, self.momentum, self.weight_decay = n_chains, centering, momentum, weight_decay
        self.ais_betas, self.ais_runs, self.device = ais_betas, ais_runs, device

    def _sections(self) -> dict:
        return {"rbm": {"num_hidden": self.n_components, "num_chains": self.n_chains, "init": "base_rate",
                        "cd_steps": self.cd_steps, "persistent": self.persistent, "centering": self.centering},
                "train": {"optimizer": "sgd", "momentum": self.momentum, "weight_decay": self.weight_decay},
                "eval": {"ais_betas": self.ais_betas, "ais_runs": self.ais_runs}}

    def _changed(self) -> None:
        self._log_z = None

    components_ = property(lambda self: self._numpy(self.model_.weight.T), doc="W^T [H, V]")
    intercept_hidden_ = property(lambda self: self._numpy(self.model_.hidden_bias), doc="c [H]")
    intercept_visible_ = property(lambda self: self._numpy(self.model_.visible_bias), doc="b [V]")

    @property
    def h_samples_(self) -> np.ndarray:
        """The persistent chains' hidden states, one draw h ~ p(h | v) from each chain's visible state
        (vaekit keeps the visible side of its chains, sklearn the hidden side; the draw is seeded, so the
        same chains give the same states): 0/1 [n_chains, n_components]. CD keeps no chains."""
        model = self.model_
        if not self.trainer_.cfg.family.persistent:
            raise AttributeError("h_samples_: CD (persistent=False) keeps no chains; fit with persistent=True")
        with seeded_stream(self.trainer_.cfg.eval.seed, self.trainer_.device), torch.no_grad():
            return self._numpy(model.hidden_given_visible(model.chains).sample())

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """p(h_j = 1 | v) for every row of X: [n_samples, n_components] (float32 for float32 X and fit data)."""
        check_is_fitted(self)
        X = self._validate(X, "transform")
        hidden = [self.model_.hidden_given_visible(x).mean for x in self._rows(X)]
        return self._numpy(torch.cat(hidden), like=X)

    @torch.no_grad()
    def gibbs(self, v) -> np.ndarray:
        """One block Gibbs sweep v -> h -> v' from each row of v [n_samples, n_features]; v' as bools."""
        check_is_fitted(self)
        v = self._validate(v, "gibbs")
        return torch.cat([self.model_.gibbs(x, 1) for x in self._rows(v)]).cpu().numpy().astype(bool)

    def sample(self, n_samples: int = 1, n_steps: int = 1000, random_state=None) -> np.ndarray:
        """p(v | h) means after n_steps Gibbs sweeps from noise: [n_samples, n_features]."""
        n_samples = self._check_count(n_samples)
        return self._draw(lambda: self.model_.sample(n_samples, n_steps), random_state)

    @torch.no_grad()
    def log_partition(self) -> tuple[float, float]:
        """(log Z, its standard error): exact when the smaller layer has at most exact_units units (error 0), else
        forward AIS from the base-rate RBM of the training data (Salakhutdinov & Murray 2008). Cached
        until the next update."""
        check_is_fitted(self)
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
        """log p(v) = -F(v) - log Z in nats for every row of X (binary rows: the log-likelihood), float64
        [n_samples]. Not sklearn's pseudo-likelihood."""
        check_is_fitted(self)
        X = self._validate(X, "score_samples")
        free_energy = torch.cat([self.model_.free_energy(x).double() for x in self._rows(X)])
        return (-free_energy - self.log_partition()[0]).cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the rows of X, nats."""
        return float(self.score_samples(X).mean())


class VAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, GenerativeEstimator):
    """Variational autoencoder (vaekit.models.VAE: MLP encoder q(z|x), prior N(0, I), MLP decoder p(x|z))
    trained by Adam on the ELBO.

    n_components: latent dimension L; hidden_layer_sizes: the encoder's hidden layers (the decoder
    mirrors them), as MLPClassifier's; activation: relu | tanh | elu | gelu | softplus | leaky_relu;
    likelihood: "bernoulli" (data in [0, 1] as Bernoulli means) or "gaussian" (a learned scale per
    feature); learning_rate, batch_size, n_iter (epochs of fit): Adam at a constant rate;
    n_importance_samples: K of score_samples; device; random_state; verbose.

    Fitted attributes: n_features_in_, feature_names_in_ (fitted on a DataFrame), model_, trainer_.
    transform gives the posterior means E_q[z|x] [n, L], inverse_transform the decoder means E[x|z]
    [n, D], sample decoder means at prior draws, score_samples log p(x) by importance sampling
    (vaekit.evaluate.log_likelihood: a stochastic lower bound, seeded; K samples per row).
    """

    family = "vae"
    parameters = {"vae.latent": "n_components", "vae.hidden": "hidden_layer_sizes", "vae.activation": "activation",
                  "vae.likelihood": "likelihood", "eval.num_samples": "n_importance_samples"}

    def __init__(self, n_components: int = 2, *, hidden_layer_sizes=(128, 128), activation: str = "tanh",
                 likelihood: str = "bernoulli", learning_rate: float = 1e-3, batch_size: int = 100, n_iter: int = 10,
                 n_importance_samples: int = 5000, device: str = "cpu", random_state=None, verbose: int = 0):
        self.n_components, self.hidden_layer_sizes, self.activation = n_components, hidden_layer_sizes, activation
        self.likelihood, self.learning_rate, self.batch_size, self.n_iter = likelihood, learning_rate, batch_size, n_iter
        self.n_importance_samples, self.device, self.random_state = n_importance_samples, device, random_state
        self.verbose = verbose

    def _sections(self) -> dict:
        return {"vae": {"latent": self.n_components, "hidden": _sizes(self.hidden_layer_sizes),
                        "activation": self.activation, "likelihood": self.likelihood},
                "train": {"optimizer": "adam"}, "eval": {"num_samples": self.n_importance_samples}}

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Posterior means E_q[z|x] for every row of X: [n_samples, n_components] (dtypes as transform's)."""
        check_is_fitted(self)
        X = self._validate(X, "transform")
        return self._numpy(torch.cat([self.model_.encode_mean(x) for x in self._rows(X)]), like=X)

    @torch.no_grad()
    def inverse_transform(self, X) -> np.ndarray:
        """Decoder means E[x|z] for latents X [n_samples, n_components]: [n_samples, n_features]
        (Bernoulli: pixel probabilities; dtypes as transform's)."""
        check_is_fitted(self)
        Z = check_array(X, dtype=FLOATS, input_name="X")
        if Z.shape[1] != self._width():
            raise ValueError(f"X has {Z.shape[1]} features, but {type(self).__name__}.inverse_transform is expecting "
                             f"{self._width()} latent dimensions as input")
        return self._numpy(torch.cat([self.model_.decode_mean(z) for z in self._rows(Z)]), like=Z)

    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Decoder means E[x|z] at z ~ N(0, I) (Bernoulli: pixel probabilities): [n_samples, n_features]."""
        n_samples = self._check_count(n_samples)
        return self._draw(lambda: self.model_.sample(n_samples), random_state)

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """log p(x) in nats for every row of X by importance sampling with q(z|x) as proposal and
        K = n_importance_samples (a stochastic lower bound, tight as K grows; seeded), float64 [n_samples]."""
        check_is_fitted(self)
        X = self._validate(X, "score_samples")
        e, model = self.trainer_.cfg.eval, self.model_.eval()
        with seeded_stream(e.seed, self.trainer_.device):
            noise = torch.randn(e.num_samples, 1, model.latent, device=self.trainer_.device)
        return torch.cat([_common_noise_log_px(model, x, noise, e.chunk_size)
                          for x in self._rows(X, e.batch_size)]).double().cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log p(x) of the rows of X, nats."""
        return float(self.score_samples(X).mean())


def _common_noise_log_px(model, x: torch.Tensor, noise: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Importance-sampled log p(x) [B] with the same standard-normal draws noise [K, 1, L] for every row:
    z_k = E_q[z|x] + sd_q(z|x) noise_k is a draw from each row's diagonal Gaussian q (common random
    numbers), so a row's estimate depends on that row alone, not on the rows scored beside it."""
    q = model.posterior(x)
    return log_mean_exp_chunks(log_importance_weights(x, q, model.prior(), model.likelihood, len(eps),
                                                      z=reparameterised(q, eps)) for eps in noise.split(chunk_size))


class HierarchicalVAE(VAE):
    """VAE with L stochastic layers and bottom-up inference (vaekit.models.HierarchicalVAE, Burda et al.
    2016): q(z_1|x) q(z_2|z_1) ..., p(z_L) ... p(z_1|z_2) p(x|z_1), trained by Adam on the ELBO.

    latent_sizes: [L_1, ..., L_L] from the data up; hidden_layer_sizes: one sequence of hidden sizes per
    stochastic layer (between it and the one below; p mirrors q); the other parameters, the fitted
    attributes and the methods as VAE's. transform gives q's ancestral means [n, sum(latent_sizes)];
    inverse_transform decodes [n, sum(latent_sizes)]; score_samples uses the whole chain q(z|x)
    as the proposal.
    """

    family = "hvae"
    parameters = {"hvae.latents": "latent_sizes", "hvae.hidden": "hidden_layer_sizes",
                  "hvae.activation": "activation", "hvae.likelihood": "likelihood",
                  "eval.num_samples": "n_importance_samples"}

    def __init__(self, latent_sizes=(100, 50), *, hidden_layer_sizes=((200, 200), (100, 100)), activation: str = "tanh",
                 likelihood: str = "bernoulli", learning_rate: float = 1e-3, batch_size: int = 100, n_iter: int = 10,
                 n_importance_samples: int = 5000, device: str = "cpu", random_state=None, verbose: int = 0):
        self.latent_sizes, self.hidden_layer_sizes, self.activation = latent_sizes, hidden_layer_sizes, activation
        self.likelihood, self.learning_rate, self.batch_size, self.n_iter = likelihood, learning_rate, batch_size, n_iter
        self.n_importance_samples, self.device, self.random_state = n_importance_samples, device, random_state
        self.verbose = verbose

    def _width(self) -> int:
        """The width of transform: all latent layers side by side."""
        return int(sum(_sizes(self.latent_sizes)))

    def _sections(self) -> dict:
        return {"hvae": {"latents": _sizes(self.latent_sizes), "hidden": [_sizes(h) for h in self.hidden_layer_sizes],
                         "activation": self.activation, "likelihood": self.likelihood},
                "train": {"optimizer": "adam"}, "eval": {"num_samples": self.n_importance_samples}}


class TopDownVAE(HierarchicalVAE):
    """Top-down hierarchical VAE (vaekit.models.TopDownVAE: Ladder VAE / NVAE-style, residual posteriors)
    trained by Adam on the ELBO.

    latent_sizes: latent groups [L_1, ..., L_L] from the data up; width: of every deterministic layer;
    depth: residual cells per group on each path; the other parameters, the fitted attributes and the
    methods as HierarchicalVAE's.
    """

    family = "topdown"
    parameters = {"topdown.latents": "latent_sizes", "topdown.width": "width", "topdown.depth": "depth",
                  "topdown.activation": "activation", "topdown.likelihood": "likelihood",
                  "eval.num_samples": "n_importance_samples"}

    def __init__(self, latent_sizes=(32, 16, 8), *, width: int = 256, depth: int = 1, activation: str = "elu",
                 likelihood: str = "bernoulli", learning_rate: float = 1e-3, batch_size: int = 100, n_iter: int = 10,
                 n_importance_samples: int = 5000, device: str = "cpu", random_state=None, verbose: int = 0):
        self.latent_sizes, self.width, self.depth, self.activation = latent_sizes, width, depth, activation
        self.likelihood, self.learning_rate, self.batch_size, self.n_iter = likelihood, learning_rate, batch_size, n_iter
        self.n_importance_samples, self.device, self.random_state = n_importance_samples, device, random_state
        self.verbose = verbose

    def _sections(self) -> dict:
        return {"topdown": {"latents": _sizes(self.latent_sizes), "width": self.width, "depth": self.depth,
                            "activation": self.activation, "likelihood": self.likelihood},
                "train": {"optimizer": "adam"}, "eval": {"num_samples": self.n_importance_samples}}


class GAN(GenerativeEstimator):
    """Generative adversarial network (vaekit.models.GAN: x = sigmoid(G(z)), z ~ N(0, I), against a
    discriminator), each player trained by its own Adam (the family's defaults: beta1 = 0.5).

    n_components: latent dimension; architecture: "conv" (DCGAN), "mlp", or "auto" (conv where the image
    shape has a stride-2 stage, else mlp); image_shape: (H, W) or (C, H, W) of the rows of X, by default
    a square single-channel image when n_features is a square number (8x8 digits, 28x28 MNIST), else
    flat data for the MLPs (architecture="conv" then needs image_shape); width: conv channels;
    hidden_layer_sizes: the MLP discriminator's layers (the generator mirrors them); loss:
    non_saturating | minimax | hinge; ema: decay of the generator's moving average (0: none);
    learning_rate, batch_size, n_iter (epochs of fit); device; random_state; verbose.

    A GAN defines no likelihood: it has no score_samples or score (asking for them is an AttributeError
    that says so) and no encoder, so no transform. Judge its samples (vaekit.quality). Fitted
    attributes: image_shape_ (C, H, W), n_features_in_, feature_names_in_, model_, trainer_.
    """

    family = "gan"
    parameters = {"gan.latent": "n_components", "gan.hidden": "hidden_layer_sizes", "gan.architecture": "architecture",
                  "gan.width": "width", "gan.loss": "loss", "gan.ema": "ema"}
    no_likelihood = ("score_samples", "score")

    def __init__(self, n_components: int = 64, *, architecture: str = "auto", image_shape=None, width: int = 64,
                 hidden_layer_sizes=(256, 256), loss: str = "non_saturating", ema: float = 0.0,
                 learning_rate: float = 2e-4, batch_size: int = 64, n_iter: int = 25, device: str = "cpu",
                 random_state=None, verbose: int = 0):
        self.n_components, self.architecture, self.image_shape, self.width = n_components, architecture, image_shape, width
        self.hidden_layer_sizes, self.loss, self.ema, self.learning_rate = hidden_layer_sizes, loss, ema, learning_rate
        self.batch_size, self.n_iter, self.device, self.random_state = batch_size, n_iter, device, random_state
        self.verbose = verbose

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: hasattr(gan, "score_samples") stays False, as sklearn's
        # duck typing expects, but the error says why
        if name in GAN.no_likelihood:
            raise AttributeError(f"GAN has no {name}: a GAN defines no likelihood p(x), only samples (judge "
                                 "them with vaekit.quality; a likelihood needs VAE or BernoulliRBM)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _sections(self) -> dict:
        return {"gan": {"latent": self.n_components, "architecture": self.architecture, "width": self.width,
                        "hidden": _sizes(self.hidden_layer_sizes), "loss": self.loss, "ema": self.ema}}

    def _resolve_image_shape(self, num_features: int) -> tuple[int, int, int]:
        """(C, H, W) of the rows of X: image_shape as given, else a square single-channel image when
        num_features is a square number, else (1, 1, D), flat data for the MLP networks."""
        if self.image_shape is not None:
            return self._given_image_shape(num_features)
        side = math.isqrt(num_features)
        if side * side == num_features:
            return (1, side, side)
        if self.architecture == "conv":
            raise ValueError(f"image_shape: X has {num_features} features, not a square number of pixels, so the "
                             f"conv networks cannot guess its images: pass image_shape=(C, H, W) with C*H*W = "
                             f"{num_features}, or architecture='mlp'")
        return (1, 1, num_features)

    def _given_image_shape(self, num_features: int) -> tuple[int, int, int]:
        """image_shape, (H, W) or (C, H, W) of positive ints, checked to hold num_features values."""
        shape = tuple(np.atleast_1d(self.image_shape))
        shape = (1, *shape) if len(shape) == 2 else shape
        whole = all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)
        if len(shape) != 3 or not whole or math.prod(shape) != num_features:
            raise ValueError(f"image_shape: expected (H, W) or (C, H, W) holding the {num_features} features of X, "
                             f"got {self.image_shape!r}")
        return tuple(int(s) for s in shape)

    def _image_set(self, x: torch.Tensor, device: torch.device) -> ImageSet:
        self.image_shape_ = self._resolve_image_shape(x.shape[1])
        return replace(as_image_set(x, "X", device), image_shape=self.image_shape_)

    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Generated images sigmoid(G(z)), z ~ N(0, I), flattened as the rows of X: [n_samples, n_features]
        in [0, 1] (the averaged generator when ema > 0)."""
        n_samples = self._check_count(n_samples)
        return self._draw(lambda: self.model_.sample(n_samples), random_state)
