"""The scikit-learn estimators (BernoulliRBM, VAE, GAN): scores against exact values, parity with
sklearn.neural_network.BernoulliRBM, sklearn's own estimator checks, and what training must improve."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import BernoulliRBM as SklearnRBM
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import validate_data

from vaekit.annealing import exact_log_partition
from vaekit.data import binarize, load_dataset
from vaekit.estimators import FLOATS, GAN, VAE, BernoulliRBM, HierarchicalVAE, TopDownVAE


@pytest.fixture(scope="module")
def digits():
    """The 1437 training digits of vaekit's split, binarised once: [1437, 64] float32 0/1."""
    x = binarize(load_dataset("digits")["train"].x, "static", torch.Generator().manual_seed(0))
    return x.numpy()


@pytest.fixture(scope="module")
def grey():
    """sklearn's 1797 digits scaled to [0, 1] grey levels: [1797, 64] float64."""
    return load_digits().data / 16.0


def independent_pixels_log_likelihood(x):
    """Mean log-likelihood of the best model with independent pixels, the floor an RBM must beat."""
    p = x.mean(0).clip(1e-3, 1 - 1e-3)
    return float((x * np.log(p) + (1 - x) * np.log1p(-p)).sum(1).mean())


def raised(call):
    """(type, message) of the exception call() raises, or None."""
    try:
        call()
    except Exception as e:
        return type(e), str(e)
    return None


# --- BernoulliRBM: the likelihood ---------------------------------------------------------------


def test_fit_scores_with_the_exact_log_likelihood(digits):
    rbm = BernoulliRBM(n_components=10, n_iter=40, momentum=0.5, random_state=0).fit(digits)
    scores = rbm.score_samples(digits)
    model = rbm.model_
    exact = (-model.free_energy(torch.as_tensor(digits)) - exact_log_partition(model)).double().detach().numpy()
    np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-4)
    assert rbm.log_partition()[1] == 0.0  # 10 hidden units: enumerated, no estimate
    assert rbm.score(digits) > independent_pixels_log_likelihood(digits) + 2, rbm.score(digits)
    assert rbm.components_.shape == (10, 64) and rbm.intercept_hidden_.shape == (10,)
    assert rbm.intercept_visible_.shape == (64,)
    h = rbm.transform(digits[:5])
    expected = 1 / (1 + np.exp(-(digits[:5] @ rbm.components_.T + rbm.intercept_hidden_)))
    np.testing.assert_allclose(h, expected, rtol=0, atol=1e-5)
    v = rbm.gibbs(digits[:7])
    assert v.shape == (7, 64) and v.dtype == bool
    assert rbm.sample(3, n_steps=10).shape == (3, 64)


def test_partial_fit_learns_from_a_stream_of_batches(digits):
    rbm = BernoulliRBM(n_components=8, momentum=0.5, random_state=0)
    rbm.partial_fit(digits[:100])
    first = rbm.score(digits)
    for epoch in range(20):
        for start in range(0, len(digits), 50):
            rbm.partial_fit(digits[start:start + 50])
    assert rbm.score(digits) > first + 2, (first, rbm.score(digits))
    assert rbm.trainer_.step == 1 + 20 * len(range(0, len(digits), 50))


def test_score_samples_uses_ais_beyond_enumeration(digits):
    """With enumeration switched off, log Z comes from AIS, checked against the exact value."""
    rbm = BernoulliRBM(n_components=15, n_iter=20, momentum=0.5, ais_betas=3000, ais_runs=100,
                       centering=0.01, random_state=0).fit(digits)
    rbm.exact_units = 0
    log_z, stderr = rbm.log_partition()
    exact = float(exact_log_partition(rbm.model_))
    assert stderr > 0 and abs(log_z - exact) < 0.1, (log_z, stderr, exact)


def test_errors_name_the_parameter_and_the_input(digits):
    with pytest.raises(ValueError, match="n_components"):
        BernoulliRBM(n_components=0).fit(digits)
    with pytest.raises(ValueError, match="centering"):
        BernoulliRBM(centering=2.0).fit(digits)
    with pytest.raises(ValueError, match=r"greater than 1 .*BernoulliRBM.fit.*\[0, 1\].*max 3"):
        BernoulliRBM(n_iter=1).fit(digits * 3)
    with pytest.raises(ValueError, match="Negative values in data passed to BernoulliRBM.fit"):
        BernoulliRBM(n_iter=1).fit(digits - 0.5)
    with pytest.raises(ValueError, match="device"):
        BernoulliRBM(device="tpu").fit(digits)
    rbm = BernoulliRBM(n_components=3, n_iter=1, random_state=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        rbm.transform(digits)
    rbm.fit(digits)
    with pytest.raises(ValueError, match="X has 5 features, but BernoulliRBM is expecting 64 features"):
        rbm.score_samples(digits[:, :5])
    with pytest.raises(ValueError, match="Values greater than 1 in data passed to BernoulliRBM.transform"):
        rbm.transform(digits + 1)


# --- BernoulliRBM: a drop-in replacement for sklearn's ------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rbm_attributes_and_dtypes_match_sklearns(digits, dtype):
    """Fitted on the same data, both have the same attributes with the same shapes and dtypes, and
    the same output dtypes from transform; feature names as sklearn's."""
    x = digits.astype(dtype)
    ours = BernoulliRBM(n_components=6, n_iter=2, n_chains=10, random_state=0).fit(x)
    theirs = SklearnRBM(n_components=6, n_iter=2, random_state=0).fit(x)
    for name in ("components_", "intercept_hidden_", "intercept_visible_"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert (a.shape, a.dtype) == (b.shape, b.dtype), name
    assert ours.h_samples_.shape == (10, 6) and theirs.h_samples_.shape[1] == 6  # chains x H vs batch x H
    assert ours.h_samples_.dtype == dtype and set(np.unique(ours.h_samples_)) <= {0.0, 1.0}
    assert ours.n_features_in_ == theirs.n_features_in_ == 64
    np.testing.assert_array_equal(ours.get_feature_names_out(), theirs.get_feature_names_out())
    assert ours.get_feature_names_out()[0] == "bernoullirbm0"
    for data in (x.astype(np.float32), x.astype(np.float64), x.astype(np.int64)):
        assert ours.transform(data).dtype == theirs.transform(data).dtype, data.dtype
    assert ours.gibbs(x).dtype == theirs.gibbs(x).dtype == bool


def bad_inputs(x):
    """Inputs sklearn's validation refuses, by name."""
    return {"NaN": np.where(x == 1, np.nan, x), "inf": np.where(x == 1, np.inf, x), "complex": x + 1j,
            "strings": np.full(x.shape, "a", dtype=object), "no rows": x[:0], "no features": x[:, :0],
            "1-D": x[0], "3-D": x[None], "a dict inside": np.array([[{"a": 1}] * x.shape[1]] * 3, dtype=object)}


@pytest.mark.parametrize("name", list(bad_inputs(np.zeros((2, 2)))))
def test_rbm_refuses_bad_input_exactly_as_sklearn(digits, name):
    """The same exception type and message as sklearn's BernoulliRBM, in fit and after it."""
    x = digits[:40]
    bad = bad_inputs(x)[name]
    ours, theirs = BernoulliRBM(n_components=2, n_iter=1), SklearnRBM(n_components=2, n_iter=1)
    refusal = raised(lambda: theirs.fit(bad))
    assert refusal is not None and raised(lambda: ours.fit(bad)) == refusal
    ours.fit(x)
    theirs.fit(x)
    for method in ("transform", "score_samples", "partial_fit"):
        refusal = raised(lambda: getattr(theirs, method)(bad))
        assert refusal is not None and raised(lambda: getattr(ours, method)(bad)) == refusal, method


def test_rbm_refuses_misuse_exactly_as_sklearn(digits):
    """Unfitted use and a wrong feature count: sklearn's NotFittedError and ValueError, word for word."""
    x = digits[:40]
    for method in ("transform", "score_samples", "gibbs"):
        refusal = raised(lambda: getattr(SklearnRBM(), method)(x))
        assert refusal[0] is NotFittedError and raised(lambda: getattr(BernoulliRBM(), method)(x)) == refusal
    assert raised(BernoulliRBM().get_feature_names_out) == raised(SklearnRBM().get_feature_names_out)
    ours, theirs = BernoulliRBM(n_components=2, n_iter=1).fit(x), SklearnRBM(n_components=2, n_iter=1).fit(x)
    for method in ("transform", "score_samples", "partial_fit"):
        refusal = raised(lambda: getattr(theirs, method)(x[:, :5]))
        assert refusal is not None and raised(lambda: getattr(ours, method)(x[:, :5])) == refusal, method
    assert not hasattr(BernoulliRBM(), "components_") and not hasattr(SklearnRBM(), "components_")


@pytest.mark.parametrize("to_sparse", [sp.csr_matrix, sp.csc_array, sp.coo_matrix])
def test_sparse_input_gives_the_dense_results(digits, to_sparse):
    """The same seed on sparse and dense X: the same model, transform and scores; partial_fit too."""
    x = digits[:300]
    dense = BernoulliRBM(n_components=5, n_iter=2, random_state=0).fit(x)
    sparse = BernoulliRBM(n_components=5, n_iter=2, random_state=0).fit(to_sparse(x))
    np.testing.assert_array_equal(sparse.components_, dense.components_)
    np.testing.assert_array_equal(sparse.transform(to_sparse(x)), dense.transform(x))
    np.testing.assert_array_equal(sparse.score_samples(to_sparse(x)), dense.score_samples(x))
    dense.partial_fit(x[:50])
    sparse.partial_fit(to_sparse(x[:50]))
    np.testing.assert_array_equal(sparse.intercept_hidden_, dense.intercept_hidden_)


def test_feature_names_from_a_dataframe(digits):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(digits[:100], columns=[f"pixel{i}" for i in range(64)])
    rbm = BernoulliRBM(n_components=3, n_iter=1, random_state=0).set_output(transform="pandas").fit(frame)
    assert list(rbm.feature_names_in_) == list(frame.columns)
    assert list(rbm.transform(frame).columns) == ["bernoullirbm0", "bernoullirbm1", "bernoullirbm2"]
    with pytest.raises(ValueError, match="feature names"):
        rbm.transform(frame.rename(columns={"pixel0": "other"}))


def test_h_samples_are_the_chains_hidden_states(digits):
    rbm = BernoulliRBM(n_components=4, n_iter=2, n_chains=7, random_state=0).fit(digits)
    h = rbm.h_samples_
    assert h.shape == (7, 4) and np.array_equal(h, rbm.h_samples_)  # seeded: the same chains, the same draw
    with pytest.raises(AttributeError, match="persistent=True"):
        BernoulliRBM(n_components=4, n_iter=1, persistent=False).fit(digits).h_samples_


# --- sklearn's estimator checks -------------------------------------------------------------------

# the largest value of each check's X (sklearn's data after X - X.min(), as positive_only asks):
# above 1, outside [0, 1]
OUT_OF_DOMAIN = {"check_estimators_overwrite_params": 9.0, "check_dont_overwrite_parameters": 2.9,
                 "check_estimators_fit_returns_self": 9.0, "check_readonly_memmap_input": 9.0,
                 "check_n_features_in_after_fitting": 4.8, "check_estimators_dtypes": 3.0,
                 "check_pipeline_consistency": 1.4, "check_estimators_pickle": 1.4,
                 "check_f_contiguous_array_estimator": 2.9, "check_transformer_data_not_an_array": 2.9,
                 "check_transformer_general": 2.9, "check_transformer_preserve_dtypes": 2.9,
                 "check_methods_sample_order_invariance": 2.9, "check_methods_subset_invariance": 2.9,
                 "check_fit2d_1sample": 1.7, "check_fit2d_1feature": 1.7, "check_dict_unchanged": 2.9,
                 "check_fit_idempotent": 4.9, "check_fit_check_is_fitted": 5.3, "check_n_features_in": 4.9,
                 "check_fit2d_predict1d": 2.9}
NOT_TRANSFORMERS = ("check_transformer_data_not_an_array", "check_transformer_general",
                    "check_transformer_preserve_dtypes")


def domain_failures(estimator) -> dict:
    """The checks that feed data outside [0, 1], each with its reason (a GAN has no transformer checks)."""
    failures = {name: f"fits on values up to {top}: outside [0, 1], the domain of a model of pixel intensities "
                f"(passes on the data squashed into [0, 1], test_sklearn_checks_in_domain)"
                for name, top in OUT_OF_DOMAIN.items()}
    if isinstance(estimator, GAN):
        failures = {k: v for k, v in failures.items() if k not in NOT_TRANSFORMERS}
    return failures


def small(cls):
    """An estimator of cls with settings that keep sklearn's ~45 checks within seconds."""
    settings = {BernoulliRBM: dict(n_components=3, n_iter=1, batch_size=20, n_chains=10, ais_betas=20, ais_runs=4),
                TopDownVAE: dict(latent_sizes=(2, 1), width=8, n_iter=1, batch_size=20, n_importance_samples=8),
                HierarchicalVAE: dict(latent_sizes=(2, 1), hidden_layer_sizes=((8,), (4,)), n_iter=1, batch_size=20,
                                      n_importance_samples=8),
                VAE: dict(n_components=2, hidden_layer_sizes=(8,), n_iter=1, batch_size=20, n_importance_samples=8),
                GAN: dict(n_components=4, hidden_layer_sizes=(8,), width=4, n_iter=1, batch_size=20)}
    base = next(c for c in settings if issubclass(cls, c))
    return cls(**settings[base])


@parametrize_with_checks([small(BernoulliRBM), small(VAE), small(HierarchicalVAE), small(TopDownVAE), small(GAN)],
                         expected_failed_checks=domain_failures,
                         xfail_strict=True)
def test_sklearn_checks(estimator, check):
    """Every check of sklearn's check_estimator passes, except those whose data lie outside [0, 1]:
    expected failures, strict (a declared failure that passes fails the test)."""
    try:
        check(estimator)
    except ValueError as error:
        if "in data passed to" not in str(error):
            raise
        # the refusal of out-of-domain data without sklearn's frames: pytest reads the source of every
        # frame of an expected failure, ~0.7 s each in sklearn's 5000-line module
        raise OutOfDomain(str(error)) from None


class OutOfDomain(ValueError):
    """Data outside [0, 1] refused by an estimator, re-raised with a short traceback."""


def squash(X):
    """|x| / (1 + |x|): any real X into [0, 1), zeros (and sparsity) kept."""
    if sp.issparse(X):
        X = X.copy()
        X.data = np.abs(X.data) / (1 + np.abs(X.data))
        return X
    return np.abs(X) / (1 + np.abs(X))


class Squashed:
    """Test double: the estimator with sklearn's input validation but X squashed into [0, 1) instead of
    refused outside it, so the checks that feed other data test everything else (pickling, idempotent
    fits, dtypes, subset invariance, ...). Accepts negative values: positive_only is off."""

    def _validate(self, X, method, reset=False, dtype=FLOATS):
        return squash(validate_data(self, X, reset=reset, accept_sparse=("csr", "csc"), dtype=dtype))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = False
        return tags


class SquashedRBM(Squashed, BernoulliRBM):
    pass


class SquashedVAE(Squashed, VAE):
    pass


class SquashedHierarchicalVAE(Squashed, HierarchicalVAE):
    pass


class SquashedTopDownVAE(Squashed, TopDownVAE):
    pass


class SquashedGAN(Squashed, GAN):
    pass


@parametrize_with_checks([small(SquashedRBM), small(SquashedVAE), small(SquashedHierarchicalVAE),
                          small(SquashedTopDownVAE), small(SquashedGAN)])
def test_sklearn_checks_in_domain(estimator, check):
    """Every check passes once its data are squashed into [0, 1]: the declared failures above are the
    out-of-domain data alone (the VAE's score_samples uses common random numbers across rows, so a
    row's estimate does not depend on the rows scored beside it)."""
    check(estimator)


@pytest.mark.parametrize("cls", [BernoulliRBM, VAE, HierarchicalVAE, TopDownVAE, GAN])
def test_clone_get_params_and_pickle_round_trip(grey, cls):
    estimator = small(cls).set_params(random_state=np.int64(4))
    if "n_components" in estimator.get_params():
        estimator.set_params(n_components=np.int64(2))
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params() and copy is not estimator
    assert repr(copy) == repr(estimator)
    a = estimator.fit(grey[:200])
    b = pickle.loads(pickle.dumps(a))
    output = (lambda e: e.transform(grey[:10])) if hasattr(a, "transform") else (lambda e: e.sample(5, random_state=0))
    np.testing.assert_array_equal(output(a), output(b))
    np.testing.assert_array_equal(output(copy.fit(grey[:200])), output(a))  # the same seed, the same model
    b.partial_fit(grey[:50])  # a loaded estimator trains on


# --- VAE ------------------------------------------------------------------------------------------


def test_vae_score_samples_is_a_tight_lower_bound_of_the_exact_value(grey):
    """A VAE with linear encoder and decoder and a Gaussian likelihood is a linear-Gaussian model:
    its exact log p(x) is known (VAE.as_linear_gaussian). Importance sampling with K = 200 is a
    stochastic lower bound of it, within 0.05 nats after training."""
    vae = VAE(n_components=2, hidden_layer_sizes=(), likelihood="gaussian", n_iter=20, learning_rate=1e-2,
              n_importance_samples=200, random_state=0).fit(grey[:1000])
    held_out = grey[1000:1300]
    exact = vae.model_.as_linear_gaussian().log_prob(torch.as_tensor(held_out, dtype=torch.float32))
    gap = exact.double().detach().numpy() - vae.score_samples(held_out)
    stderr = gap.std() / np.sqrt(len(gap))
    assert -3 * stderr < gap.mean() < 0.05, (gap.mean(), stderr)
    assert vae.score(held_out) == pytest.approx(vae.score_samples(held_out).mean())


def test_vae_training_improves_likelihood_and_reconstruction(grey):
    """From 1 to 20 epochs, the held-out log-likelihood rises and transform -> inverse_transform
    reconstructs the held-out digits better."""
    train, held_out = grey[:1000], grey[1000:]

    def fitted(n_iter):
        vae = VAE(n_components=4, hidden_layer_sizes=(32,), n_iter=n_iter, learning_rate=3e-3,
                  n_importance_samples=100, random_state=0).fit(train)
        z = vae.transform(held_out)
        error = ((vae.inverse_transform(z) - held_out) ** 2).sum(1).mean()
        return vae.score(held_out), error, z.shape

    (score_1, error_1, shape), (score_20, error_20, _) = fitted(1), fitted(20)
    assert shape == (len(held_out), 4)
    assert score_20 > score_1 + 5 and error_20 < 0.7 * error_1, (score_1, score_20, error_1, error_20)


def test_vae_outputs_shapes_dtypes_and_errors(grey):
    x32 = grey[:300].astype(np.float32)
    vae = VAE(n_components=3, hidden_layer_sizes=(16,), n_iter=2, random_state=0, n_importance_samples=10).fit(x32)
    z = vae.transform(x32)
    assert z.dtype == np.float32 and vae.transform(grey[:5]).dtype == np.float64
    back = vae.inverse_transform(z)
    assert back.shape == (300, 64) and back.dtype == np.float32 and 0 <= back.min() and back.max() <= 1
    samples = vae.sample(7, random_state=1)
    assert samples.shape == (7, 64) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, vae.sample(7, random_state=1))
    assert list(vae.get_feature_names_out()) == ["vae0", "vae1", "vae2"]
    from_sparse = clone(vae).fit(sp.csr_matrix(x32))  # densified whole: the same model
    np.testing.assert_array_equal(from_sparse.transform(sp.csc_matrix(x32)), z)
    np.testing.assert_array_equal(from_sparse.score_samples(sp.csr_matrix(x32[:20])), vae.score_samples(x32[:20]))
    with pytest.raises(ValueError, match="X has 2 features, but VAE.inverse_transform is expecting 3 latent"):
        vae.inverse_transform(z[:, :2])
    with pytest.raises(ValueError, match="n_samples"):
        vae.sample(0)
    with pytest.raises(ValueError, match="likelihood: 'poisson' is not one of"):
        VAE(likelihood="poisson").fit(x32)
    with pytest.raises(ValueError, match=r"hidden_layer_sizes\[0\]"):
        VAE(hidden_layer_sizes=(0,)).fit(x32)
    with pytest.raises(ValueError, match="n_importance_samples"):
        VAE(n_importance_samples=0).fit(x32)


# --- GAN ------------------------------------------------------------------------------------------


def test_gan_samples_move_towards_the_data(grey):
    """Samples are images in [0, 1] shaped as the rows of X; training brings the mean sample image
    closer to the mean digit."""
    x = grey.astype(np.float32)

    def mean_image_error(n_iter):
        gan = GAN(n_components=8, width=8, n_iter=n_iter, learning_rate=1e-3, random_state=0).fit(x)
        samples = gan.sample(500, random_state=0)
        assert samples.shape == (500, 64) and samples.dtype == np.float32
        assert 0 <= samples.min() and samples.max() <= 1
        assert gan.image_shape_ == (1, 8, 8) and gan.model_.architecture == "conv"
        return np.abs(samples.mean(0) - x.mean(0)).mean()

    before, after = mean_image_error(1), mean_image_error(6)
    assert after < 0.5 * before, (before, after)


def test_gan_image_shape_and_no_likelihood(grey):
    flat = GAN(n_components=2, hidden_layer_sizes=(8,), n_iter=1, random_state=0).fit(grey[:100, :10])
    assert flat.image_shape_ == (1, 1, 10) and flat.model_.architecture == "mlp"  # 10 is no square
    shaped = GAN(n_components=2, width=4, n_iter=1, image_shape=(4, 16), random_state=0).fit(grey[:100])
    assert shaped.image_shape_ == (1, 4, 16) and shaped.sample(3).shape == (3, 64)
    with pytest.raises(ValueError, match="image_shape: X has 10 features, not a square"):
        GAN(architecture="conv", n_iter=1).fit(grey[:100, :10])
    with pytest.raises(ValueError, match=r"image_shape: expected \(H, W\) or \(C, H, W\) holding the 64 features"):
        GAN(image_shape=(3, 8, 8), n_iter=1).fit(grey[:100])
    with pytest.raises(ValueError, match="loss"):
        GAN(loss="wasserstein").fit(grey[:100])
    assert not hasattr(flat, "score_samples") and not hasattr(flat, "transform")
    with pytest.raises(AttributeError, match="GAN has no score_samples: a GAN defines no likelihood"):
        flat.score_samples(grey[:5, :10])
    with pytest.raises(NotFittedError):
        GAN().sample(3)


@pytest.mark.parametrize("cls", [HierarchicalVAE, TopDownVAE])
def test_hierarchical_estimators_transform_to_all_layers_and_score_with_the_whole_chain(grey, cls):
    estimator = small(cls).set_params(n_iter=3, n_importance_samples=50, random_state=0).fit(grey[:300])
    z = estimator.transform(grey[:10])
    assert z.shape == (10, 3) and estimator.inverse_transform(z).shape == (10, grey.shape[1])
    assert estimator.get_feature_names_out()[0] == f"{cls.__name__.lower()}0"
    scores = estimator.score_samples(grey[:20])
    assert scores.shape == (20,) and np.all(np.isfinite(scores))
    np.testing.assert_allclose(estimator.score_samples(grey[3:4]), scores[3:4], rtol=1e-5)  # common random numbers
    assert estimator.score(grey[:20]) == pytest.approx(scores.mean())
    with pytest.raises(ValueError, match="latent_sizes"):
        cls(latent_sizes=(2, 0)).fit(grey[:50])
