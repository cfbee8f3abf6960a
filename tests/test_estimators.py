"""The scikit-learn style BernoulliRBM: scores against the exact log-likelihood, the sklearn contract."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from vaekit.annealing import exact_log_partition
from vaekit.data import binarize, load_dataset
from vaekit.estimators import BernoulliRBM


@pytest.fixture(scope="module")
def digits():
    x = binarize(load_dataset("digits")["train"].x, "static", torch.Generator().manual_seed(0))
    return x.numpy()


def independent_pixels_log_likelihood(x):
    """Mean log-likelihood of the best model with independent pixels, the floor an RBM must beat."""
    p = x.mean(0).clip(1e-3, 1 - 1e-3)
    return float((x * np.log(p) + (1 - x) * np.log1p(-p)).sum(1).mean())


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


def test_sklearn_contract(digits):
    rbm = BernoulliRBM(n_components=4, n_iter=2, random_state=3)
    assert clone(rbm).get_params() == rbm.get_params()
    a = rbm.fit_transform(digits)
    b = clone(rbm).fit(digits).transform(digits)
    np.testing.assert_array_equal(a, b)  # random_state fixes every draw
    assert a.shape == (len(digits), 4)


def test_errors_name_the_parameter_and_the_input(digits):
    with pytest.raises(ValueError, match="n_components"):
        BernoulliRBM(n_components=0).fit(digits)
    with pytest.raises(ValueError, match="centering"):
        BernoulliRBM(centering=2.0).fit(digits)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BernoulliRBM(n_iter=1).fit(digits * 3)
    rbm = BernoulliRBM(n_components=3, n_iter=1, random_state=0)
    with pytest.raises(Exception, match="not fitted"):
        rbm.transform(digits)
    rbm.fit(digits)
    with pytest.raises(ValueError, match="5 features.*64"):
        rbm.score_samples(digits[:, :5])
