"""Tests for fairdiff.gaussian_process: the BO step's Gaussian process, whose fit objective and UCB
posterior are computed in closed form. Each closed form is compared with the library computation it
replaces (values and gradients) and with finite differences (torch.autograd.gradcheck)."""
from __future__ import annotations

import pytest
import torch

import fairdiff  # noqa: F401  (sets cache locations before torch/botorch read them)
from fairdiff import gaussian_process
from fairdiff.gaussian_process import propose_sigma


def _data(n=30, k=7, seed=0, scale=1e-3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, k, generator=gen, dtype=torch.float64)
    y = -((x - 0.4) ** 2).sum(1, keepdim=True) * scale + 1e-2 * scale * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return x, y


def _mll(x, y):
    from gpytorch.mlls import ExactMarginalLogLikelihood

    gp = gaussian_process.gaussian_process(x, y)
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    mll.train()
    return mll


def test_closed_form_fit_objective_equals_gpytorchs_value_and_gradient():
    # botorch's own loss closure (gpytorch's exact MLL with priors) against ours, at the initial
    # hyperparameters and at random ones
    from botorch.optim.closures import ForwardBackwardClosure, get_loss_closure_with_grads
    from botorch.optim.utils import get_parameters

    mll = _mll(*_data())
    params = get_parameters(mll, requires_grad=True)
    assert len(params) == 4  # noise, constant mean, outputscale, lengthscales
    theirs = get_loss_closure_with_grads(mll, params)
    ours = ForwardBackwardClosure(lambda: gaussian_process._negative_mll(mll), params)
    gen = torch.Generator().manual_seed(1)
    for trial in range(4):
        if trial:
            with torch.no_grad():
                for p in params.values():
                    p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                mll.likelihood.noise_covar.raw_noise.clamp_(min=1e-3)
        value_t, grads_t = theirs()
        grads_t = [g.clone() for g in grads_t]
        value_o, grads_o = ours()
        assert abs(float(value_o.detach()) - float(value_t.detach())) <= 1e-12 * abs(float(value_t.detach()))
        for name, a, b in zip(params, grads_o, grads_t):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (trial, name)
        assert all(float(g.abs().max()) > 1e-6 for g in grads_t)  # every gradient is exercised


def test_closed_form_functions_pass_gradcheck():
    x, y = _data(n=8, k=3)
    lengthscale = torch.tensor([0.3, 0.7, 1.4], dtype=torch.float64, requires_grad=True)
    scalars = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (1.3, 0.05, 0.2)]
    y = (y - y.mean()).reshape(-1) / y.std()
    assert torch.autograd.gradcheck(lambda l, s, n, c: gaussian_process._GaussianNLL.apply(l, s, n, c, x, y),
                                    (lengthscale, *scalars))
    gp = gaussian_process.gaussian_process(x, y[:, None])
    ucb = gaussian_process.CachedUCB(gp, beta=0.1)
    z = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z = torch.cat([z, x[:1]]).requires_grad_()  # a training point too (distance 0)
    for output in (0, 1):
        assert torch.autograd.gradcheck(
            lambda z: gaussian_process._PosteriorMoments.apply(z, ucb._x, ucb._lengthscale, ucb._outputscale,
                                                               ucb._prior_mean, ucb._chol, ucb._alpha)[output], (z,))


def test_both_likelihoods_fit_the_same_hyperparameters():
    x, y = _data()
    fitted = {}
    for likelihood in gaussian_process.GP_LIKELIHOODS:
        gp = gaussian_process.gaussian_process(x, y)
        with gaussian_process.one_thread():
            gaussian_process.fit(gp, likelihood)
        fitted[likelihood] = gaussian_process.gp_hyperparameters(gp)
    start = gaussian_process.gp_hyperparameters(gaussian_process.gaussian_process(x, y))
    for name, value in fitted["gpytorch"].items():
        assert torch.allclose(fitted["closed_form"][name], value, rtol=1e-4, atol=1e-6), name
        assert not torch.allclose(value, start[name]), name  # the fit moved it


def test_unknown_likelihood_and_foreign_models_are_refused():
    from botorch.models import SingleTaskGP

    from fairdiff.config import CHOICES

    assert CHOICES["fbp.gp_likelihood"] == gaussian_process.GP_LIKELIHOODS  # the config offers what fit accepts

    x, y = _data(n=6, k=2)
    with pytest.raises(ValueError, match="gp_likelihood: expected one of"):
        gaussian_process.fit(gaussian_process.gaussian_process(x, y), "exact")
    with pytest.raises(ValueError, match="expected the GP of gaussian_process"):
        gaussian_process.fit(SingleTaskGP(x, y), "closed_form")  # botorch's default: RBF kernel


def test_propose_sigma_finds_a_clear_maximum():
    # 15 points of y = -||x - c||^2 in 2-D: the UCB maximiser lies near c
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(15, 2, generator=gen, dtype=torch.float64)
    c = torch.tensor([0.3, 0.7], dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        candidate, value = propose_sigma(x, -((x - c) ** 2).sum(1, keepdim=True))
    assert float((candidate - c).norm()) < 0.1 and value > -0.05


def _fitted_gp(n=30, k=7, seed=0):
    x, y = _data(n, k, seed)
    with gaussian_process.one_thread():
        gp = gaussian_process.gaussian_process(x, y)
        gaussian_process.fit(gp, "gpytorch")
    return gp, x


def test_cached_ucb_equals_botorch_ucb_values_and_gradients():
    # the closed-form posterior must be botorch's UpperConfidenceBound (to float64 rounding, which an
    # ill-conditioned 30-point kernel matrix amplifies to ~1e-10), at random points and at training points
    from botorch.acquisition.analytic import UpperConfidenceBound

    gp, x = _fitted_gp()
    points = torch.cat([torch.rand(40, 1, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
                        x[:5, None, :]]).requires_grad_()
    ours, theirs = gaussian_process.CachedUCB(gp, beta=0.1)(points), UpperConfidenceBound(gp, beta=0.1)(points)
    assert ours.shape == theirs.shape == (45,)
    scale = float(theirs.detach().abs().max())
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-7 * scale)
    grad_ours, = torch.autograd.grad(ours.sum(), points)
    grad_theirs, = torch.autograd.grad(theirs.sum(), points)
    assert torch.allclose(grad_ours, grad_theirs, rtol=0, atol=1e-7 * float(grad_theirs.abs().max()))
    assert float(theirs.detach().std()) > 1e3 * 1e-7 * scale  # the points differ: the comparison is not trivial


def test_cached_ucb_refuses_a_model_it_was_not_written_for():
    from botorch.models import SingleTaskGP

    x = torch.rand(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="expected the GP of gaussian_process"):
        gaussian_process.CachedUCB(SingleTaskGP(x, x.sum(1, keepdim=True)), beta=0.1)  # botorch's default: RBF kernel


def test_initial_hyperparameters_of_another_model_are_refused():
    x = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="GP hyperparameters: expected"):
        propose_sigma(x, -x.sum(1, keepdim=True), init={"raw_noise": torch.zeros(1)})
