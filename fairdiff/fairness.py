"""Fair Bayesian Perturbation (FairDiffusion's method), group DRO and two standard fairness baselines.

Everything here is pure tensor code with no training loop: the trainer calls

    fbp = FairBayesianPerturbation(schema.n_groups, seed=seed, rank=rank)
    w = fbp.weights(groups)                 # every rank, every step: per-sample loss weights
    loss = (w * per_sample_loss).mean()
    record = fbp.update(all_losses, all_groups)   # rank 0 only, on losses gathered from all ranks
    fbp.sigma = broadcast(fbp.sigma)        # every rank: the broadcast hook (a validating setter)

``groups`` is always a LongTensor[B, A]: one column per sensitive attribute in schema order, the
group id in ``0..n_groups[a]-1`` or ``-1`` for unknown. The per-group scales are one flat vector
of length K = sum(n_groups), attribute after attribute (FairGenMed: race 0-2, gender 3-4,
ethnicity 5-6).

Randomness never touches the global RNG: every draw comes from a generator seeded by a key
(seed, stream, index), so a run is a pure function of its seed and inputs, ranks differ by their
``rank``, and a resumed run continues exactly (the state holds counters, not generator states).
See docs/method.md §3 for the method step by step and §6 for the rules we changed.
"""
from __future__ import annotations

import copy
import math
import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from botorch.exceptions.errors import ModelFittingError
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from fairdiff.gaussian_process import check_gp_likelihood, fit_and_maximise, propose_sigma

__all__ = [
    "group_means", "group_gap", "FairBayesianPerturbation", "GroupDRO", "propose_sigma",
    "reweight_weights", "balanced_sampling_weights",
]

# Independent random streams of one FairBayesianPerturbation (the second element of a seed key).
_NOISE, _EXPLORE, _BO = 0, 1, 2


# ----------------------------------------------------------------------------------- groups
# The per-step group bookkeeping runs in numpy: a batch is a few dozen integers, where each torch call
# costs several microseconds of dispatch (about 1 ms a step in all, inside the training loop) and
# numpy's one or two. Both add in input order, so the values are the same bit for bit.
def _groups_array(groups: Tensor, n_groups: Sequence[int]) -> np.ndarray:
    """``groups`` as an int64 numpy array [B, A], after failing loudly on a wrong shape or an id outside
    -1..n_groups[a]-1 (the paper's code let -1 wrap around to the last group, see docs/method.md §6,
    row 7)."""
    if groups.dim() != 2 or groups.shape[1] != len(n_groups):
        raise ValueError(f"groups: expected a tensor of shape [B, {len(n_groups)}] (one column per "
                         f"attribute), got shape {tuple(groups.shape)}")
    if groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(f"groups: expected an integer tensor, got {groups.dtype}")
    array = groups.detach().cpu().numpy().astype(np.int64, copy=False)
    if array.size:
        bad = (array < -1) | (array >= np.asarray(n_groups))
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"groups[{row}, {col}] = {int(array[row, col])}: expected -1 (unknown) "
                             f"or a group id in 0..{n_groups[col] - 1}")
    return array


def _flat_index(groups: Tensor, n_groups: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(index into the flat K-vector of groups, mask of known entries), both numpy [B, A]."""
    array = _groups_array(groups, n_groups)
    return np.maximum(array + _offsets(tuple(n_groups)), 0), array >= 0


@lru_cache(maxsize=16)
def _offsets(n_groups: tuple[int, ...]) -> np.ndarray:
    """Where each attribute starts in the flat K-vector (cached: never modify it)."""
    return np.asarray([sl.start for sl in _attribute_slices(n_groups)], dtype=np.int64)


def _group_stats(losses: Tensor, groups: Tensor, n_groups: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (mean loss, count) of S steps at once: losses [S, B], groups [S, B, A] ->
    float64 / int64 numpy [S, K]; the mean is NaN where count is 0.

    Computed on the CPU in float64: a batch is tiny, and GPU scatter-adds sum in a random order,
    which would make y (and so the whole BO trajectory) irreproducible. ``bincount`` adds in input
    order, so a step's row is the same bit for bit whether it is computed alone or with others."""
    if groups.dim() != 3 or losses.shape != groups.shape[:2]:
        raise ValueError(f"losses: expected shape {tuple(groups.shape[:2])} (one loss per row of groups), "
                         f"got {tuple(losses.shape)}")
    n_steps, batch = losses.shape
    k = sum(n_groups)
    idx, known = _flat_index(groups.reshape(n_steps * batch, groups.shape[2]), n_groups)
    idx = idx + (np.arange(n_steps * batch) // max(batch, 1) * k)[:, None]  # step s owns bins s*K..s*K+K-1
    values = np.broadcast_to(losses.detach().to("cpu", torch.float64).numpy().reshape(-1, 1), idx.shape)
    sums = np.bincount(idx[known], weights=values[known], minlength=n_steps * k)
    counts = np.bincount(idx[known], minlength=n_steps * k)
    with np.errstate(invalid="ignore"):  # 0 / 0 = NaN: an absent group
        return (sums / counts).reshape(n_steps, k), counts.reshape(n_steps, k)


def _one_step(losses: Tensor, groups: Tensor, n_groups: Sequence[int]) -> tuple[Tensor, Tensor]:
    """One batch (losses [B], groups [B, A]) as a step of :func:`_group_stats`, after checking shapes."""
    if groups.dim() != 2 or groups.shape[1] != len(n_groups):
        _groups_array(groups, n_groups)  # raises the shape message
    if losses.dim() != 1 or losses.shape[0] != groups.shape[0]:
        raise ValueError(f"losses: expected shape [{groups.shape[0]}] (one loss per row of groups), "
                         f"got {tuple(losses.shape)}")
    return losses[None], groups[None]


def group_means(losses: Tensor, groups: Tensor, n_groups: Sequence[int]) -> list[Tensor]:
    """Mean loss of every group, one float64 CPU tensor per attribute, NaN for groups absent from the
    batch (for logging per-group losses). Unknown (-1) entries are left out of their attribute."""
    means, _ = _group_stats(*_one_step(losses, groups, n_groups), n_groups)
    return [torch.from_numpy(m) for m in _split(means[0], n_groups)]


def group_gap(losses: Tensor, groups: Tensor, n_groups: Sequence[int]) -> float:
    """FairDiffusion's unfairness objective: sum over attributes of (max - min) group-mean loss.

    Only groups present in the batch count; an attribute with fewer than two present groups adds
    0, so the result is never NaN because of missing groups and an empty batch gives 0.0 (the
    paper's code zeroed the whole attribute when one group was missing and crashed when all were).
    Non-finite losses do propagate: a diverged step must not look fair."""
    return float(_gaps(*_group_stats(*_one_step(losses, groups, n_groups), n_groups), n_groups)[0])


def step_group_stats(losses: Tensor, groups: Tensor, n_groups: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Per-group mean losses (float64 [S, K], NaN for absent groups) and group gaps (float64 [S])
    of S steps at once, from their losses [S, B] and groups [S, B, A]: the trainer keeps each
    step's gathered batch and builds its log rows in bulk. Row s equals :func:`group_means` and
    :func:`group_gap` of step s alone, bit for bit."""
    if losses.dim() != 2:
        raise ValueError(f"losses: expected shape [S, B] (S steps of B losses), got {tuple(losses.shape)}")
    if groups.dim() != 3:
        raise ValueError(f"groups: expected shape [S, B, {len(n_groups)}] (S steps of B rows, one column "
                         f"per attribute), got {tuple(groups.shape)}")
    means, counts = _group_stats(losses, groups, n_groups)
    return torch.from_numpy(means), torch.from_numpy(_gaps(means, counts, n_groups))


def _gaps(means: np.ndarray, counts: np.ndarray, n_groups: Sequence[int]) -> np.ndarray:
    """Sum over attributes of (max - min) over present groups, per row of [S, K]: float64 [S].
    The attributes are added in order to a start of 0.0, as a loop over Python floats would."""
    gap = np.zeros(means.shape[0], dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf from infinite losses: NaN, as it should be
        for sl in _attribute_slices(tuple(n_groups)):
            present = counts[:, sl] > 0
            high = np.where(present, means[:, sl], -np.inf).max(axis=1)
            low = np.where(present, means[:, sl], np.inf).min(axis=1)
            gap = gap + np.where(present.sum(axis=1) >= 2, high - low, 0.0)
    return gap


def _split(vector: np.ndarray, n_groups: Sequence[int]) -> list[np.ndarray]:
    """A flat K-vector cut into one piece per attribute."""
    return [vector[sl] for sl in _attribute_slices(tuple(n_groups))]


# ------------------------------------------------------------------------ randomness helpers
def _seed(*key: int) -> int:
    """A 63-bit seed hashed from non-negative integers; distinct keys give independent streams."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*key))


def _finite_vector(value, n: int, name: str) -> Tensor:
    """``value`` as a new float64 CPU vector of ``n`` finite numbers (the broadcast hooks' check)."""
    value = torch.as_tensor(value).detach().to("cpu", torch.float64).reshape(-1)
    if value.numel() != n or not torch.isfinite(value).all():
        raise ValueError(f"{name}: expected {n} finite values, got {value.tolist()}")
    return value.clone()


def _clamp_mean_one(w: Tensor) -> Tensor:
    """max(w, 0) rescaled to mean 1; all-zero (or empty) batches become plain weights of 1."""
    w = w.clamp(min=0)
    total = w.sum()
    return w * (w.numel() / total) if total > 0 else torch.ones_like(w)


def _check_saved_settings(state: dict, mine: dict, before: dict) -> None:
    """Refuse a state saved with other settings than the object loading it was built with, naming
    every difference. ``before``: what a state saved before a setting existed ran with."""
    saved = state.get("settings")
    if saved is None:
        raise ValueError("state_dict: no 'settings' entry (saved by an older fairdiff, which did not record "
                         "the seed and settings); it cannot be checked, so it is not loaded")
    saved = {**before, **saved}
    differ = [f"{key}: saved {saved.get(key, '<missing>')!r}, this object {value!r}"
              for key, value in mine.items() if saved.get(key) != value]
    if differ:
        raise ValueError("state_dict: saved with other settings than this object was built with; build it "
                         "with the saved ones to continue that run. " + "; ".join(differ))


# ------------------------------------------------------------------------------ the method
# What a state saved before a setting existed ran with (the setting's value that reproduces it);
# sigma_init, which depends on K, is added per object (every scale started at 1).
_SETTINGS_BEFORE_THEY_EXISTED = {"gp_likelihood": "gpytorch", "weight_floor": None}


class FairBayesianPerturbation:
    """Group-dependent random loss weights whose scales Bayesian optimisation tunes to shrink the
    between-group loss gap (FairDiffusion, Luo et al. 2025; docs/method.md §3).

    Per step, sample i gets ``w_i = 1 + sum_a sigma[a, g_a(i)] * e_ia`` with e ~ N(0, 1). Every
    ``window`` calls of :meth:`update` (a global count that spans epochs) a GP is fitted to the
    window's (sigma used, y = -group_gap) pairs and sigma jumps to the UCB maximiser; after that,
    every call mixes ``sigma = r * sigma + (1 - r) * u``, u ~ U(0, 1)^K, r = ``exploitation``.

    ``sigma_init`` is the starting sigma: one number for every group (the paper: 1) or K numbers.
    ``bo=False`` is the paper's ``random`` ablation: sigma stays at ``sigma_init`` for good (no BO
    and no mixing), which also makes the fixed-sigma and oracle controls (docs/method.md §3.10);
    :meth:`update` still reports y and per-group losses for logging.
    ``clamp=True`` (off by default, the paper does not clamp) replaces the weights by
    ``max(w, 0)`` renormalised to mean 1 over the batch; at sigma = 1 with three attributes the
    unclamped weights are negative 28 % of the time. ``weight_floor`` (a number; CompDiff's
    reimplementation uses 0.1) replaces them by ``max(w, floor)`` without renormalising, so the mean
    weight exceeds 1 and grows with sigma; it cannot be combined with ``clamp``.

    ``num_restarts`` and ``raw_samples`` are the UCB maximisation's (``optimize_acqf``; the
    authors': 5 and 20). ``warm_start=True`` starts each GP fit from the hyperparameters of the
    previous one instead of gpytorch's initial values (the authors' setting, ``warm_start=False``):
    the fit then needs fewer iterations. ``gp_likelihood`` is how the fit evaluates the GP's
    marginal likelihood (:func:`fairdiff.gaussian_process.fit`): ``"closed_form"`` (default) or
    through gpytorch (``"gpytorch"``, the authors' code); the same model and optimiser, a third less
    time per BO event. benchmarks/results/bo_replay.md measures, on a recorded trace, the time each
    setting saves and how far the chosen sigma moves.

    Distributed training: only rank 0 calls :meth:`update` (with losses and groups gathered from
    every rank) and then every rank assigns the broadcast tensor to :attr:`sigma`. Each rank draws
    its own noise e from the key (seed, rank, call), so ranks differ but are reproducible.
    """

    def __init__(self, n_groups: Sequence[int], window: int = 30, exploitation: float = 0.95,
                 beta: float = 0.1, clamp: bool = False, seed: int = 0, bo: bool = True,
                 num_restarts: int = 5, raw_samples: int = 20, rank: int = 0, warm_start: bool = False,
                 gp_likelihood: str = "closed_form", sigma_init: float | Sequence[float] = 1.0,
                 weight_floor: float | None = None):
        self.n_groups = [int(n) for n in n_groups]
        if not self.n_groups or min(self.n_groups) < 1:
            raise ValueError(f"n_groups: expected a non-empty list of positive group counts, got {list(n_groups)}")
        if window < 2:
            raise ValueError(f"window: a GP needs at least 2 points per window, got {window}")
        if not 0.0 <= exploitation <= 1.0:
            raise ValueError(f"exploitation: expected a rate in [0, 1], got {exploitation}")
        if seed < 0 or rank < 0:
            raise ValueError(f"seed and rank must be non-negative integers, got seed={seed}, rank={rank}")
        check_gp_likelihood(gp_likelihood)  # here, not at the first BO event
        if num_restarts < 1 or raw_samples < 1:
            raise ValueError(f"num_restarts and raw_samples: expected positive integers, got "
                             f"num_restarts={num_restarts}, raw_samples={raw_samples}")
        self.window, self.exploitation, self.beta = int(window), float(exploitation), float(beta)
        self.clamp, self.seed, self.bo, self.rank = bool(clamp), int(seed), bool(bo), int(rank)
        self.num_restarts, self.raw_samples, self.warm_start = int(num_restarts), int(raw_samples), bool(warm_start)
        self.gp_likelihood = gp_likelihood
        self.k = sum(self.n_groups)
        start = torch.as_tensor(sigma_init, dtype=torch.float64).reshape(-1)
        start = start.expand(self.k) if start.numel() == 1 else start
        if start.numel() != self.k or not (torch.isfinite(start).all() and (start >= 0).all()):
            raise ValueError(f"sigma_init: expected one number or {self.k} numbers, finite and >= 0, "
                             f"got {torch.as_tensor(sigma_init).tolist()}")
        if weight_floor is not None and (clamp or not math.isfinite(weight_floor)):
            raise ValueError(f"weight_floor={weight_floor} with clamp={clamp}: expected a finite floor, and either "
                             "a floor (weights max(w, floor), not renormalised) or clamp (max(w, 0) rescaled to mean "
                             "1), not both")
        self.sigma_init = start.tolist()
        self.weight_floor = None if weight_floor is None else float(weight_floor)
        self._sigma = start.clone()
        self._buffer_x: list[Tensor] = []
        self._buffer_y: list[float] = []
        self._step = 0   # calls of update(): the global optimisation step
        self._draws = 0  # calls of weights() on this rank
        self.history: list[dict] = []
        self._gp_init: dict[str, Tensor] = {}  # the last fit's hyperparameters (warm_start only)

    # -- the scales -------------------------------------------------------------------------
    @property
    def sigma(self) -> Tensor:
        """Current per-group scales (float64 [K], a copy). Assigning is the broadcast hook."""
        return self._sigma.clone()

    @sigma.setter
    def sigma(self, value: Tensor) -> None:
        self._sigma = _finite_vector(value, self.k, "sigma")

    @property
    def step(self) -> int:
        """How many times :meth:`update` has run."""
        return self._step

    # -- per-step interface -----------------------------------------------------------------
    def weights(self, groups: Tensor) -> Tensor:
        """Per-sample loss weights (float32 [B], on ``groups``' device) from the current sigma.
        An unknown group (-1) adds no term for that attribute."""
        idx, known = _flat_index(groups, self.n_groups)
        noise = torch.randn(idx.shape, dtype=torch.float64,
                            generator=_generator(self.seed, _NOISE, self.rank, self._draws)).numpy()
        self._draws += 1
        w = torch.from_numpy(1.0 + (np.where(known, self._sigma.numpy()[idx], 0.0) * noise).sum(axis=1))
        if self.clamp:
            w = _clamp_mean_one(w)
        elif self.weight_floor is not None:
            w = w.clamp(min=self.weight_floor)
        return w.to(device=groups.device, dtype=torch.float32)

    def update(self, losses: Tensor, groups: Tensor) -> dict:
        """Record one step's unweighted per-sample losses (gathered over all ranks), run BO at the
        end of a window, then mix in exploration noise. Returns the step's log record:
        ``step`` (1-based), ``y`` (= -group_gap), ``sigma_used``, ``group_means`` (per attribute,
        NaN for absent groups), ``sigma_next`` and ``bo`` (None, or the BO event, see
        :meth:`_bo_step`)."""
        means, counts = _group_stats(*_one_step(losses, groups, self.n_groups), self.n_groups)
        gap = float(_gaps(means, counts, self.n_groups)[0])
        y = -gap if gap else 0.0  # no "-0.0" in logs
        self._step += 1
        record = {"step": self._step, "y": y, "sigma_used": self._sigma.tolist(),
                  "group_means": [m.tolist() for m in _split(means[0], self.n_groups)], "bo": None}
        if self.bo:
            self._buffer_x.append(self._sigma.clone())
            self._buffer_y.append(y)
            if self._step % self.window == 0:
                record["bo"] = self._bo_step()
            u = torch.rand(self.k, dtype=torch.float64, generator=_generator(self.seed, _EXPLORE, self._step))
            self._sigma = self.exploitation * self._sigma + (1.0 - self.exploitation) * u
        record["sigma_next"] = self._sigma.tolist()
        return record

    def _bo_step(self) -> dict:
        """Fit the GP on the window, move sigma to the UCB maximiser, clear the buffer.

        Never raises for bad data: fewer than two finite y values, a constant y (a GP cannot be
        fitted to it) or a failed fit leave sigma unchanged and say why under ``skipped``.
        Seeded from (seed, step) inside ``fork_rng``, so it is reproducible and leaves the
        caller's global RNG untouched. Warnings from botorch are kept in the event, not printed."""
        x, y = torch.stack(self._buffer_x), torch.tensor(self._buffer_y, dtype=torch.float64)
        self._buffer_x, self._buffer_y = [], []
        finite = torch.isfinite(y)
        x, y = x[finite], y[finite]
        event = {"step": self._step, "n_points": int(y.numel()),
                 "window_mean_y": float(y.mean()) if y.numel() else math.nan,
                 "candidate": None, "acq_value": None, "skipped": None, "warnings": []}
        if y.numel() < 2:
            event["skipped"] = "fewer than 2 finite objective values in the window"
        elif float(y.max() - y.min()) <= 1e-12 * max(1.0, float(y.abs().max())):
            event["skipped"] = "objective constant over the window; a GP cannot be fitted to it"
        else:
            with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=[]):
                warnings.simplefilter("always")
                torch.manual_seed(_seed(self.seed, _BO, self._step))
                try:
                    candidate, value, fitted = fit_and_maximise(x, y[:, None], self.beta, self.num_restarts,
                                                                self.raw_samples, self._gp_init or None,
                                                                self.gp_likelihood)
                except (ModelFittingError, NotPSDError, NanError) as exc:
                    event["skipped"] = f"GP fit failed: {type(exc).__name__}: {exc}"
                else:
                    self._sigma = candidate
                    if self.warm_start:
                        self._gp_init = fitted
                    event["candidate"], event["acq_value"] = candidate.tolist(), value
            event["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        self.history.append(event)
        return event

    # -- checkpointing ------------------------------------------------------------------------
    def settings(self) -> dict:
        """The constructor arguments, which fix the object's future as much as its state does."""
        return {"n_groups": list(self.n_groups), "window": self.window, "exploitation": self.exploitation,
                "beta": self.beta, "clamp": self.clamp, "seed": self.seed, "bo": self.bo, "rank": self.rank,
                "num_restarts": self.num_restarts, "raw_samples": self.raw_samples, "warm_start": self.warm_start,
                "gp_likelihood": self.gp_likelihood, "sigma_init": list(self.sigma_init),
                "weight_floor": self.weight_floor}

    def state_dict(self) -> dict:
        """Everything the object's future depends on: its :meth:`settings` (seed included), sigma,
        the BO buffer, the counters, the BO history and the warm-start hyperparameters, as plain
        tensors, numbers, strings and lists (``torch.save``-able, loadable with ``weights_only=True``)."""
        return {"settings": self.settings(), "sigma": self._sigma.clone(),
                "buffer_x": torch.stack(self._buffer_x) if self._buffer_x else torch.zeros(0, self.k, dtype=torch.float64),
                "buffer_y": torch.tensor(self._buffer_y, dtype=torch.float64),
                "step": self._step, "draws": self._draws, "history": copy.deepcopy(self.history),
                "gp_init": {name: v.clone() for name, v in self._gp_init.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; the run then continues exactly as if never stopped
        (on every rank: each rank re-derives its own noise from the restored counters).

        The saved settings must equal this object's: a state saved with another seed, window, rank,
        ... raises ValueError naming every difference, and nothing is loaded. It is never adopted,
        because the object would then silently run with settings other than it was built with
        (the trainer builds it from the run's config: a mismatch means the wrong config)."""
        _check_saved_settings(state, self.settings(), {**_SETTINGS_BEFORE_THEY_EXISTED, "sigma_init": [1.0] * self.k})
        self.sigma = state["sigma"]
        self._buffer_x = [row.to(torch.float64).clone() for row in state["buffer_x"]]
        self._buffer_y = [float(v) for v in state["buffer_y"]]
        self._step, self._draws = int(state["step"]), int(state["draws"])
        self.history = copy.deepcopy(list(state["history"]))
        self._gp_init = {name: torch.as_tensor(v).to(torch.float64).clone() for name, v in state["gp_init"].items()}


# ------------------------------------------------------------------------------ group DRO
class GroupDRO:
    """Online group DRO (Sagawa et al., ICLR 2020; docs/method.md §2.6): loss weights that move
    towards the groups of one attribute whose loss stays highest.

    A distribution q over the ``n_groups[attribute]`` groups starts uniform. Per step, from the
    unweighted per-sample losses of the global batch, every group g present in it gets
    ``q_g <- q_g * exp(eta * mean loss of g)``, then ``q <- q / sum(q)``; absent groups change only
    through that renormalisation, and a group whose mean is not finite is treated as absent (a
    diverged step must not decide the weights for the rest of the run). Sample i's loss weight is
    ``n * q[g(i)]``: 1 for every sample at uniform q, mean 1 over a batch balanced over the groups,
    and 1 for a sample whose group is unknown (-1).

    q is held as log q, normalised to logsumexp 0, so a group's weight can shrink for 10^5 steps
    without underflowing to an unrecoverable 0; the update is the same multiplication in log space.

    Distributed training, as :class:`FairBayesianPerturbation`: only rank 0 calls :meth:`update`
    with the gathered losses and groups, then every rank assigns the broadcast :attr:`log_q`.
    """

    def __init__(self, n_groups: Sequence[int], attribute: int, eta: float):
        self.n_groups = [int(n) for n in n_groups]
        if not self.n_groups or min(self.n_groups) < 1:
            raise ValueError(f"n_groups: expected a non-empty list of positive group counts, got {list(n_groups)}")
        if not 0 <= attribute < len(self.n_groups):
            raise ValueError(f"attribute: expected an attribute index in 0..{len(self.n_groups) - 1}, got {attribute}")
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta: expected a finite step size >= 0, got {eta}")
        self.attribute, self.eta = int(attribute), float(eta)
        self.n = self.n_groups[self.attribute]
        self._log_q = torch.full((self.n,), -math.log(self.n), dtype=torch.float64)
        self._step = 0  # calls of update()

    @property
    def q(self) -> Tensor:
        """The group distribution (float64 [n], sums to 1)."""
        return self._log_q.exp()

    @property
    def log_q(self) -> Tensor:
        """log q (float64 [n], a copy). Assigning is the broadcast hook."""
        return self._log_q.clone()

    @log_q.setter
    def log_q(self, value: Tensor) -> None:
        self._log_q = _finite_vector(value, self.n, "log_q")

    @property
    def step(self) -> int:
        """How many times :meth:`update` has run."""
        return self._step

    def weights(self, groups: Tensor) -> Tensor:
        """Per-sample loss weights ``n * q[g(i)]`` (float32 [B], on ``groups``' device); 1 for an
        unknown group."""
        column = _groups_array(groups, self.n_groups)[:, self.attribute]
        scaled = self.n * self._log_q.exp().numpy()
        w = np.where(column >= 0, scaled[np.maximum(column, 0)], 1.0)
        return torch.from_numpy(w).to(device=groups.device, dtype=torch.float32)

    def update(self, losses: Tensor, groups: Tensor) -> dict:
        """One exponentiated-gradient step of q from one step's unweighted per-sample losses
        (gathered over all ranks). Returns ``step`` (1-based), ``q_used``, ``group_means`` (this
        attribute's groups, NaN for absent ones) and ``q_next``."""
        means, counts = _group_stats(*_one_step(losses, groups, self.n_groups), self.n_groups)
        sl = _attribute_slices(tuple(self.n_groups))[self.attribute]
        mean, moves = means[0, sl], (counts[0, sl] > 0) & np.isfinite(means[0, sl])
        record = {"step": self._step + 1, "q_used": self.q.tolist(), "group_means": mean.tolist()}
        log_q = self._log_q + torch.from_numpy(self.eta * np.where(moves, mean, 0.0))
        self._log_q = log_q - torch.logsumexp(log_q, dim=0)
        self._step += 1
        record["q_next"] = self.q.tolist()
        return record

    def settings(self) -> dict:
        """The constructor arguments."""
        return {"n_groups": list(self.n_groups), "attribute": self.attribute, "eta": self.eta}

    def state_dict(self) -> dict:
        """Settings, log q and the step count (``torch.save``-able, loadable with ``weights_only=True``)."""
        return {"settings": self.settings(), "log_q": self._log_q.clone(), "step": self._step}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; a state saved with other settings raises ValueError
        naming every difference and loads nothing (as :meth:`FairBayesianPerturbation.load_state_dict`)."""
        _check_saved_settings(state, self.settings(), {})
        self.log_q = state["log_q"]
        self._step = int(state["step"])


# ------------------------------------------------------------------------------ baselines
def _selected(n_groups: Sequence[int], attributes: Sequence[int] | None) -> list[bool]:
    """Which attributes a baseline balances: all for None, else those listed (by index)."""
    if attributes is None:
        return [True] * len(n_groups)
    chosen = [int(a) for a in attributes]
    if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= a < len(n_groups) for a in chosen):
        raise ValueError(f"attributes: expected None or distinct attribute indices in 0..{len(n_groups) - 1}, "
                         f"got {list(attributes)}")
    return [a in chosen for a in range(len(n_groups))]


def reweight_weights(groups: Tensor, n_groups: Sequence[int], attributes: Sequence[int] | None = None) -> Tensor:
    """Inverse-frequency loss weights for the ``reweight`` baseline (float32 [N], mean 1 over N).

    For attribute a with N_a known samples over P_a present groups, a sample of group g gets the
    term N_a / (P_a * N_{a,g}) (= N / (n_groups_a * N_{a,g}) when nothing is unknown or absent);
    its weight is the mean of its terms over the attributes it has known, 1 if none, and the
    weights are finally rescaled to mean 1. Each attribute's term alone balances that attribute;
    averaged over A attributes the weighted share of group g is only pulled part of the way to
    1 / n_a (for independent attributes: (1 / n_a + (A - 1) * N_{a,g} / N) / A).

    ``attributes`` (indices; None = all) limits the terms to those attributes: the others are
    treated like unknown groups, so with one attribute listed its groups are balanced exactly."""
    selected = _selected(n_groups, attributes)
    idx, known = (torch.from_numpy(a).to(groups.device) for a in _flat_index(groups, n_groups))
    if attributes is not None:
        known = known & torch.tensor(selected, device=known.device)
    if idx.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float32, device=groups.device)
    counts = torch.bincount(idx[known], minlength=sum(n_groups)).to(torch.float64)
    term = torch.empty_like(counts)
    for sl, c in zip(_attribute_slices(tuple(n_groups)), counts.split(list(n_groups))):
        term[sl] = c.sum() / ((c > 0).sum() * c)  # inf for absent groups, which no sample indexes
    per_attribute = torch.where(known, term[idx], torch.full((), math.nan, dtype=torch.float64, device=idx.device))
    w = per_attribute.nanmean(dim=1).nan_to_num(nan=1.0)
    return (w / w.mean()).to(torch.float32)


def balanced_sampling_weights(groups: Tensor, n_groups: Sequence[int], tol: float = 1e-9,
                              max_sweeps: int = 1000, attributes: Sequence[int] | None = None) -> Tensor:
    """Sampling probabilities (float64 [N], sum 1) for torch's WeightedRandomSampler in the
    ``resample`` baseline: under them, for every attribute, the samples whose group is known are
    drawn from each present group exactly equally often.

    Found by raking (iterative proportional fitting): rescale each attribute's groups to equal
    mass in turn until all attributes balance at once. The result is the distribution closest to
    uniform sampling (in KL) with balanced marginals. When the group counts factorise (independent
    attributes) it is the product over attributes of 1 / N_{a,g}; for correlated attributes it
    still balances exactly, where averaged inverse frequencies (:func:`reweight_weights`) only
    balance part of the way. If no exact balance exists (e.g. a group of one attribute always
    occurs with one group of another, and the two attributes have different numbers of groups),
    a warning reports the remaining imbalance. ``attributes`` (indices; None = all) limits the
    balancing to those attributes; the others keep the proportions they have within each group."""
    selected = _selected(n_groups, attributes)
    _groups_array(groups, n_groups)
    if groups.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=groups.device)
    # Samples with the same group tuple share a weight, so rake the few distinct tuples ("cells").
    cells, cell_of_sample, size = torch.unique(groups.cpu().long(), dim=0, return_inverse=True, return_counts=True)
    w = torch.ones(cells.shape[0], dtype=torch.float64)  # weight of one sample of each cell
    imbalance = math.inf
    for _ in range(max_sweeps):
        imbalance = 0.0
        for a, n in enumerate(n_groups):
            if not selected[a]:
                continue
            known = cells[:, a] >= 0
            mass = torch.bincount(cells[known, a], weights=(w * size)[known], minlength=n)
            present = mass > 0
            if present.sum() < 2:
                continue
            target = mass[present].mean()
            imbalance = max(imbalance, float((mass[present] / target - 1).abs().max()))
            w[known] *= torch.where(present, target / mass, torch.ones_like(mass))[cells[known, a]]
        if imbalance < tol:
            break
    else:
        warnings.warn(f"balanced_sampling_weights: groups cannot all be balanced at once; the largest "
                      f"relative deviation from equal group shares is still {imbalance:.3g}", stacklevel=2)
    w = w[cell_of_sample].to(groups.device)
    return w / w.sum()


@lru_cache(maxsize=16)
def _attribute_slices(n_groups: tuple[int, ...]) -> tuple[slice, ...]:
    """Where each attribute's groups sit in the flat K-vector."""
    ends = np.cumsum(list(n_groups)).tolist()
    return tuple(slice(end - n, end) for n, end in zip(n_groups, ends))
