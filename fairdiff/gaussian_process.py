"""The Gaussian process behind Fair Bayesian Perturbation's BO step: the surrogate model, its fit and
the Upper-Confidence-Bound maximisation (docs/method.md §3.5).

Everything is botorch and gpytorch (model, priors, constraints, the L-BFGS-B fit with its bounds and
retries, the UCB and its maximisation) except the arithmetic they repeat some fifty times per BO
event: the fit's objective and the UCB's posterior moments, with their gradients, are computed here
in closed form from one Cholesky factor. Through the libraries' general machinery (lazy operators,
distribution objects, an autograd graph of some fifty small nodes) each of those calls costs 1 to 2
ms on 30 points, most of a BO event; here it is a few small matrix products. The closed forms are
written for the one model :func:`gaussian_process` builds, refuse any other, and equal the
libraries' values and gradients to float64 rounding (tests/test_fairness.py compares them).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from botorch.acquisition.analytic import UpperConfidenceBound
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from botorch.optim.closures import ForwardBackwardClosure
from botorch.optim.utils import get_parameters
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

__all__ = ["GP_LIKELIHOODS", "check_gp_likelihood", "gaussian_process", "fit", "CachedUCB", "propose_sigma",
           "gp_hyperparameters"]

# How a fit evaluates the marginal likelihood it maximises (``fbp.gp_likelihood``).
GP_LIKELIHOODS = ("closed_form", "gpytorch")
_ROOT5 = math.sqrt(5.0)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block. The GP holds at most ``window`` points, so
    threads only add overhead: on a busy 2-core machine a K = 7 BO event took 1.6 s with one
    thread and 6.6 s with two (median, benchmarks/bench_fbp.py). It also makes the result
    independent of the caller's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ the model
def gaussian_process(x: Tensor, y: Tensor) -> SingleTaskGP:
    """The surrogate model, with every modelling choice written out (not botorch's defaults).

    Kernel: ScaleKernel(Matern-5/2 with one lengthscale per group (ARD)), lengthscale prior
    Gamma(3, 6), outputscale prior Gamma(2, 0.15); Gaussian likelihood with a Gamma(1.1, 0.05)
    noise prior and noise >= 1e-4; constant mean. This is SingleTaskGP's default up to botorch
    0.11, i.e. what the authors' unpinned mid-2024 code most likely ran; botorch 0.12 silently
    switched to an RBF kernel with dimension-scaled LogNormal priors. Writing it out keeps our
    deviations from the paper to the ones docs/method.md §3.5 lists: float64 on the CPU and
    Standardize(m=1) on y (the gaps are ~1e-3, far below the priors' scale). The inputs are the
    scales themselves, already in [0, 1]^K, so no input transform is needed."""
    k = x.shape[-1]
    kernel = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=k, lengthscale_prior=GammaPrior(3.0, 6.0)),
                         outputscale_prior=GammaPrior(2.0, 0.15))
    noise_prior = GammaPrior(1.1, 0.05)
    noise_mode = (noise_prior.concentration - 1) / noise_prior.rate
    likelihood = GaussianLikelihood(noise_prior=noise_prior,
                                    noise_constraint=GreaterThan(1e-4, transform=None, initial_value=noise_mode))
    return SingleTaskGP(x, y, likelihood=likelihood, covar_module=kernel, outcome_transform=Standardize(m=1))


def check_gp_likelihood(likelihood: str) -> None:
    """Refuse a ``gp_likelihood`` that is not one of :data:`GP_LIKELIHOODS`."""
    if likelihood not in GP_LIKELIHOODS:
        raise ValueError(f"gp_likelihood: expected one of {GP_LIKELIHOODS}, got {likelihood!r}")


def _check_model(gp: SingleTaskGP, who: str) -> None:
    """The closed forms are written for the model :func:`gaussian_process` builds; any other raises."""
    kernel = gp.covar_module
    if not (isinstance(kernel, ScaleKernel) and isinstance(kernel.base_kernel, MaternKernel)
            and kernel.base_kernel.nu == 2.5 and isinstance(gp.outcome_transform, Standardize)
            and getattr(gp, "input_transform", None) is None and gp.train_inputs[0].dim() == 2):
        raise ValueError(f"{who}: expected the GP of gaussian_process (ScaleKernel(Matern-5/2), Standardize, "
                         "no input transform, no batch)")


def _matern52(diff: Tensor, lengthscale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit Matern-5/2 of coordinate differences ``diff`` [..., d] under ARD ``lengthscale`` [d]:
    (kernel value, r, exp(-sqrt(5) r)), each [...]. Its derivatives need no division by r
    (d value / dr = -5/3 r (1 + sqrt(5) r) exp(-sqrt(5) r)), so they are finite at r = 0."""
    r = (diff / lengthscale).pow(2).sum(-1).sqrt()
    decay = torch.exp(-_ROOT5 * r)
    return (1.0 + _ROOT5 * r + (5.0 / 3.0) * r.pow(2)) * decay, r, decay


# ------------------------------------------------------------------------------ the fit
class _GaussianNLL(torch.autograd.Function):
    """-log N(y; c 1, s K(x / l) + noise I) for the unit Matern-5/2 kernel K, with its gradient in
    (l, s, noise, c) in closed form: with W = (Sigma^-1 - a a^T) / 2, a = Sigma^-1 (y - c), the
    derivative in any entry of Sigma is W's entry there."""

    @staticmethod
    def forward(ctx, lengthscale, outputscale, noise, constant, x, y):
        n = len(x)
        diff = x[:, None, :] - x  # [n, n, d]
        unit, r, decay = _matern52(diff, lengthscale)
        chol = psd_safe_cholesky(outputscale * unit + noise * torch.eye(n, dtype=x.dtype))
        resid = (y - constant)[:, None]
        alpha = torch.cholesky_solve(resid, chol)
        ctx.save_for_backward(lengthscale, outputscale, diff, unit, r, decay, chol, alpha)
        return 0.5 * (resid * alpha).sum() + chol.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)

    @staticmethod
    def backward(ctx, grad):
        lengthscale, outputscale, diff, unit, r, decay, chol, alpha = ctx.saved_tensors
        w = 0.5 * (torch.cholesky_inverse(chol) - alpha @ alpha.T)  # d nll / d Sigma
        # d unit / d l_k = 5/3 (1 + sqrt(5) r) exp(-sqrt(5) r) diff_k^2 / l_k^3
        weight = w * (5.0 / 3.0) * (1.0 + _ROOT5 * r) * decay
        d_lengthscale = outputscale * torch.einsum("ij,ijk->k", weight, diff.pow(2)) / lengthscale.pow(3)
        return (grad * d_lengthscale, grad * (w * unit).sum(), grad * w.diagonal().sum(), -grad * alpha.sum(),
                None, None)


def _negative_mll(mll: ExactMarginalLogLikelihood, priors: list | None = None) -> Tensor:
    """What botorch's fit minimises: minus the exact marginal log likelihood of the (standardised)
    training targets plus the log prior densities of the hyperparameters, over the number of points.
    The hyperparameters come from the modules' own properties (gpytorch's constraint transforms
    apply), the priors are gpytorch's objects and the factorisation is linear_operator's (the same
    jitter on a near-singular matrix); only the Gaussian density and its gradient are ours. ``priors``:
    ``list(gp.named_priors())``, which a fit lists once instead of walking the modules every step."""
    gp = mll.model
    kernel = gp.covar_module
    x, y = gp.train_inputs[0], gp.train_targets
    value = _GaussianNLL.apply(kernel.base_kernel.lengthscale.reshape(-1), kernel.outputscale,
                               gp.likelihood.noise.reshape(()), gp.mean_module.constant.reshape(()), x, y)
    for _, module, prior, closure, _ in (gp.named_priors() if priors is None else priors):
        value = value - prior.log_prob(closure(module)).sum()
    return value / len(x)


def fit(gp: SingleTaskGP, likelihood: str = "closed_form") -> None:
    """botorch's fit (scipy's L-BFGS-B with botorch's bounds, options and retries) of the GP's
    hyperparameters. ``likelihood`` says how each step evaluates the objective: ``"gpytorch"``
    through gpytorch (the authors' code), ``"closed_form"`` through :func:`_negative_mll`. The two
    agree to rounding, which L-BFGS-B can carry into the fitted values at the size of its
    tolerance: benchmarks/results/bo_replay.md measures how far the chosen sigma moves."""
    check_gp_likelihood(likelihood)
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    if likelihood == "gpytorch":
        fit_gpytorch_mll(mll)
        return
    _check_model(gp, "closed_form GP fit")
    mll.train()
    priors = list(gp.named_priors())
    fit_gpytorch_mll(mll, closure=ForwardBackwardClosure(lambda: _negative_mll(mll, priors),
                                                         get_parameters(mll, requires_grad=True)))


# ------------------------------------------------------------------------------ the UCB
class _PosteriorMoments(torch.autograd.Function):
    """Posterior mean and variance of the standardised GP at points z [b, d], from the training
    inputs x [n, d], the Cholesky factor of their covariance and alpha = Sigma^-1 (y - c); the
    gradient in z in closed form. Returns ([b], [b]): c + k(z)^T alpha and s - k(z)^T Sigma^-1 k(z)."""

    @staticmethod
    def forward(ctx, z, x, lengthscale, outputscale, constant, chol, alpha):
        diff = z[:, None, :] - x  # [b, n, d]
        unit, r, decay = _matern52(diff, lengthscale)
        cross = outputscale * unit  # [b, n]
        v = torch.linalg.solve_triangular(chol, cross.T, upper=False)  # [n, b]
        ctx.save_for_backward(diff, r, decay, chol, v, alpha, lengthscale, outputscale)
        return constant + (cross @ alpha).reshape(-1), outputscale - v.pow(2).sum(0)

    @staticmethod
    def backward(ctx, grad_mean, grad_var):
        diff, r, decay, chol, v, alpha, lengthscale, outputscale = ctx.saved_tensors
        solved = torch.linalg.solve_triangular(chol.T, v, upper=True)  # Sigma^-1 k(z): [n, b]
        grad_cross = grad_mean[:, None] * alpha.reshape(1, -1) - 2.0 * grad_var[:, None] * solved.T  # [b, n]
        # d cross / d z_k = -5/3 s (1 + sqrt(5) r) exp(-sqrt(5) r) diff_k / l_k^2
        weight = grad_cross * (-5.0 / 3.0) * outputscale * (1.0 + _ROOT5 * r) * decay
        return torch.einsum("bn,bnk->bk", weight, diff) / lengthscale.pow(2), None, None, None, None, None, None


class CachedUCB(UpperConfidenceBound):
    """botorch's Upper Confidence Bound of a fitted GP, its posterior moments computed in closed form
    (:class:`_PosteriorMoments`) from one Cholesky factor made when the object is built (the GP's
    hyperparameters are fixed by then). botorch's forward pass, beta and batch handling stay."""

    def __init__(self, gp: SingleTaskGP, beta: float):
        super().__init__(gp, beta=beta)
        _check_model(gp, "CachedUCB")
        kernel = gp.covar_module
        with torch.no_grad():
            self._lengthscale = kernel.base_kernel.lengthscale.detach().reshape(-1)
            self._outputscale = kernel.outputscale.detach()
            self._x = gp.train_inputs[0].detach()
            self._prior_mean = gp.mean_module.constant.detach().reshape(())
            unit, _, _ = _matern52(self._x[:, None, :] - self._x, self._lengthscale)
            train = self._outputscale * unit + gp.likelihood.noise.detach() * torch.eye(len(self._x), dtype=self._x.dtype)
            self._chol = torch.linalg.cholesky(train)
            self._alpha = torch.cholesky_solve((gp.train_targets.detach() - self._prior_mean)[:, None], self._chol)
            self._y_mean = gp.outcome_transform.means.detach().reshape(())
            self._y_std = gp.outcome_transform.stdvs.detach().reshape(())

    def _mean_and_sigma(self, X: Tensor, compute_sigma: bool = True, min_var: float = 1e-12):
        """Posterior mean and standard deviation of y at X ([b, 1, d]), both [b, 1], on y's scale."""
        mean, variance = _PosteriorMoments.apply(X.reshape(-1, X.shape[-1]), self._x, self._lengthscale,
                                                 self._outputscale, self._prior_mean, self._chol, self._alpha)
        mean = (mean * self._y_std + self._y_mean).reshape(X.shape[:-2] + (1,))
        if not compute_sigma:
            return mean, None
        return mean, (variance * self._y_std ** 2).clamp_min(min_var).sqrt().reshape(mean.shape)


# ------------------------------------------------------------------------------ one BO step
def propose_sigma(x: Tensor, y: Tensor, beta: float = 0.1, num_restarts: int = 5, raw_samples: int = 20,
                  init: dict[str, Tensor] | None = None, gp_likelihood: str = "closed_form") -> tuple[Tensor, float]:
    """Fit the GP to (scales used, objective) pairs and return the Upper-Confidence-Bound maximiser
    in [0, 1]^K with its acquisition value. ``x``: [n, K], ``y``: [n, 1]; both are moved to float64
    on the CPU. ``init``: hyperparameters to start the fit from (see :func:`gp_hyperparameters`;
    None: gpytorch's initial values, the authors' setting). ``gp_likelihood``: see :func:`fit`. Uses
    the global torch RNG: callers seed it (FairBayesianPerturbation does). Runs single-threaded (see
    :func:`one_thread`)."""
    candidate, value, _ = fit_and_maximise(x, y, beta, num_restarts, raw_samples, init, gp_likelihood)
    return candidate, value


def fit_and_maximise(x: Tensor, y: Tensor, beta: float, num_restarts: int, raw_samples: int,
                     init: dict[str, Tensor] | None, gp_likelihood: str) -> tuple[Tensor, float, dict[str, Tensor]]:
    """:func:`propose_sigma`, also returning the fitted hyperparameters (for the next warm start)."""
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.float64)
    k = x.shape[-1]
    bounds = torch.stack([torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.float64)])
    with one_thread():
        gp = gaussian_process(x, y)
        if init is not None:
            _set_hyperparameters(gp, init)
        fit(gp, gp_likelihood)
        candidate, value = optimize_acqf(CachedUCB(gp, beta=beta), bounds=bounds, q=1,
                                         num_restarts=num_restarts, raw_samples=raw_samples)
    return candidate.reshape(k).clamp(0, 1), float(value), gp_hyperparameters(gp)


def gp_hyperparameters(gp: SingleTaskGP) -> dict[str, Tensor]:
    """The GP's trainable parameters (raw, i.e. before their constraints' transforms) by name."""
    return {name: p.detach().clone() for name, p in gp.named_parameters()}


def _set_hyperparameters(gp: SingleTaskGP, values: dict[str, Tensor]) -> None:
    """Start a fit from earlier hyperparameters; they must be this GP's names and shapes."""
    params = dict(gp.named_parameters())
    expected = {n: tuple(p.shape) for n, p in params.items()}
    got = {n: tuple(torch.as_tensor(v).shape) for n, v in values.items()}
    if got != expected:
        raise ValueError(f"GP hyperparameters: expected {expected} (name: shape), got {got}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(values[name])
