"""Fine-tuning the UNet of a latent diffusion model, with the loss weighting a method asks for.

One loop serves every method (docs/method.md §2): ``baseline`` (plain mean), ``random``
(perturbation with sigma fixed, at 1 by default), ``fairbo`` (Fair Bayesian Perturbation),
``reweight`` (inverse group frequency), ``resample`` (group-balanced batches) and ``groupdro``
(group DRO's weights q). It runs as a plain process or under ``accelerate launch`` on several
processes: the unweighted losses and groups are gathered, the Bayesian optimisation (or group DRO's
update) runs on the main process and sigma (or q) is broadcast, so every process uses the same
weights' scales at every step (the authors' code lets ranks drift apart).

The data order, the noise and the perturbations are functions of (seed, step, rank), and every
piece of state lives in the checkpoint, so ``resume="latest"`` continues exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from fairdiff.progress import Progress

from fairdiff import config as config_mod
from fairdiff import io, stage_keys, tracking
from fairdiff.checkpoints import (CHECKPOINT_PREFIX, latest_checkpoint,  # noqa: F401 (both re-exported)
                                  latest_intact, load_checkpoint, require_intact, save_checkpoint)
from fairdiff.errors import RunConflict
from fairdiff.fairness import (FairBayesianPerturbation, GroupDRO, balanced_sampling_weights, reweight_weights,
                               step_group_stats)
from fairdiff.models import quiet_hf
from fairdiff.prepare import TrainingCache, training_cache
from fairdiff.runs import METHODS
from fairdiff.schema import get_schema


def _seeded(*parts: int) -> torch.Generator:
    """A generator whose state depends only on ``parts``: order-free, resume-proof randomness."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class BatchOrder:
    """Which training records the k-th global micro-batch holds; a pure function of (seed, k).

    Uniform methods walk seeded per-epoch permutations; ``resample`` draws with replacement from
    the group-balanced distribution."""

    def __init__(self, n: int, global_batch: int, seed: int, probs: torch.Tensor | None = None):
        self.n, self.global_batch, self.seed, self.probs = n, global_batch, seed, probs

    @lru_cache(maxsize=4)
    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=_seeded(self.seed, 1, epoch))

    def __call__(self, k: int) -> torch.Tensor:
        if self.probs is not None:
            return torch.multinomial(self.probs, self.global_batch, replacement=True, generator=_seeded(self.seed, 2, k))
        out, pos = [], k * self.global_batch
        while sum(len(o) for o in out) < self.global_batch:
            epoch, offset = divmod(pos, self.n)
            take = min(self.global_batch - sum(len(o) for o in out), self.n - offset)
            out.append(self._perm(epoch)[offset:offset + take])
            pos += take
        return torch.cat(out)


@dataclass
class TrainState:
    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    bo_trace: list[dict] = field(default_factory=list)


def _group_columns(schema) -> list[str]:
    return [f"{a.name}={g}" for a in schema.attributes for g in a.groups]


def train(cfg: dict, method: str, out_dir: str | Path, base: str, cache_dir: str | Path,
          resume: str | None = None, max_steps: int | None = None, progress: bool = True,
          on_step=None) -> Path:
    """Train ``method`` from the pipeline at ``base``; writes the run directory and returns it.

    ``max_steps`` stops early (the schedule still targets ``train.steps``): used to test resume.
    ``on_step(info)``, if given, is called on every process after every step with the step, rank,
    world size, the sigma used, and the local and gathered batch sizes (tests use it to check
    that processes really communicate)."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    quiet_hf()
    tc, schema = cfg["train"], get_schema(cfg["dataset"])
    out_dir = Path(out_dir)
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=tc["mixed_precision"],
                      gradient_accumulation_steps=tc["gradient_accumulation_steps"],
                      **tracking.accelerator_kwargs(cfg, out_dir))  # train.report_to: main process, <run>/logs
    rank, world = acc.process_index, acc.num_processes
    st = stage_keys.train_stage(cfg, method)
    if _claim_run_dir(out_dir, st, resume):  # every rank reads the same stamp before anyone writes
        return out_dir
    acc.wait_for_everyone()
    if acc.is_main_process and stage_keys.read_stamp(out_dir) is None:
        stage_keys.write_stamp(out_dir, st, profile=cfg["profile"])

    # Cache built once by the main process; the others wait and read it.
    if acc.is_main_process:
        cache = training_cache(cfg, base, cache_dir, progress=progress)
    acc.wait_for_everyone()
    if not acc.is_main_process:
        cache = training_cache(cfg, base, cache_dir, progress=False)

    torch.manual_seed(cfg["seed"])  # identical initial weights on every rank and for every method
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    if tc["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    unet.train()
    # foreach EMA: one multi-tensor update; the EMA weights may differ from a per-tensor update in the
    # last bit (never the training itself); both repeat exactly run to run and on resume
    ema = EMAModel(unet.parameters(), decay=tc["ema_decay"], model_cls=UNet2DConditionModel,
                   model_config=unet.config, foreach=True) if tc["ema"] else None
    optimizer = torch.optim.AdamW(unet.parameters(), lr=tc["lr"], betas=(0.9, 0.999),
                                  weight_decay=tc["adam_weight_decay"], eps=1e-8,
                                  **_adamw_kernel(tc["adamw_kernel"], acc.device))
    unet, optimizer = acc.prepare(unet, optimizer)
    if ema is not None:
        ema.to(acc.device)

    fbp = _make_perturbation(cfg, method, rank)
    dro = GroupDRO(schema.n_groups, schema.attribute_names.index(cfg["groupdro"]["attribute"]),
                   cfg["groupdro"]["eta"]) if method == "groupdro" else None
    method_state = fbp if fbp is not None else dro  # draws the weights; its state goes into every checkpoint
    reweighted = _attribute_indices(schema, cfg["reweight"]["attributes"])
    static_w = reweight_weights(cache.groups, schema.n_groups, reweighted) if method == "reweight" else None
    probs = _sampling_probs(cfg, method, schema, cache.groups)
    order = BatchOrder(len(cache.ids), tc["batch_size"] * world, cfg["seed"], probs)
    state = TrainState()
    ckpt = None
    if resume:
        ckpt = latest_intact(out_dir) if resume == "latest" else require_intact(Path(resume))
        if ckpt is None and acc.is_main_process and (out_dir / "checkpoints").is_dir():
            print(f"{out_dir}: no intact checkpoint to resume from; training starts at step 0", flush=True)
    if ckpt is not None:
        state = TrainState(**load_checkpoint(ckpt, out_dir, acc, unet, optimizer, ema, method_state, rank))
        if acc.is_main_process:
            print(f"{out_dir}: resuming {method} at step {state.step} from {ckpt.name}", flush=True)
    else:
        torch.manual_seed(cfg["seed"] * 1000 + rank)  # per-rank noise stream
    if acc.is_main_process and not (out_dir / "config.yaml").is_file():  # written once, never by a resume
        io.write_text(out_dir / "config.yaml", config_mod.dump(cfg | {"method": method, "base": base}))

    # The same Parameter objects for the whole run (prepare and load_checkpoint work in place): listed once,
    # since walking the module tree for them twice a step cost about 0.5 ms.
    params = list(acc.unwrap_model(unet).parameters())
    total = tc["steps"] if max_steps is None else min(max_steps, tc["steps"])
    accum = tc["gradient_accumulation_steps"]
    group_cols = _group_columns(schema)
    bar = Progress(total=total, initial=state.step, desc=f"train {method}", disable=not (progress and acc.is_main_process),
               mininterval=1.0)
    pending = []  # what each step since the last log keeps for its metrics row (main process)
    tracker = tracking.start(acc, cfg, method, out_dir, base, state, unet, ema, optimizer)  # None: report_to null
    attribute = cfg["groupdro"]["attribute"]
    state_cols = [f"q[{attribute}={g}]" for g in schema.attribute(attribute).groups] if dro is not None else None
    while state.step < total:
        sigma_used = fbp.sigma if fbp is not None else None
        q_used = dro.q if dro is not None else None  # this step's weights use q before this step's update
        gathered_l, gathered_g, weighted = [], [], []
        for micro in range(accum):
            idx = order(state.step * accum + micro)[rank * tc["batch_size"]:(rank + 1) * tc["batch_size"]]
            with acc.accumulate(unet):
                per_sample, groups = _per_sample_loss(unet, noise_scheduler, cache, idx, tc["uncond_prob"], acc.device,
                                                      tc["input_perturbation"])
                if method_state is not None:  # FBP's perturbation or group DRO's q
                    w = method_state.weights(groups).to(per_sample)
                elif static_w is not None:
                    w = static_w[idx].to(per_sample)
                else:
                    w = torch.ones_like(per_sample)
                loss = (w * per_sample).mean()
                acc.backward(loss)
                if acc.sync_gradients and tc["max_grad_norm"]:
                    acc.clip_grad_norm_(params, tc["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            gathered_l.append(acc.gather(per_sample.detach().float()))  # left on the device until logged
            gathered_g.append(acc.gather(groups.to(acc.device)))
            weighted.append(acc.gather(loss.detach().float().reshape(1)))
        losses, groups_all = torch.cat(gathered_l), torch.cat(gathered_g)
        record = None
        if method == "fairbo":
            if acc.is_main_process:
                record = fbp.update(losses, groups_all)
            if world > 1:  # a single process already holds its sigma
                fbp.sigma = broadcast(fbp.sigma.to(acc.device)).cpu()
        if dro is not None:
            if acc.is_main_process:
                dro.update(losses, groups_all)
            if world > 1:
                dro.log_q = broadcast(dro.log_q.to(acc.device)).cpu()
        if ema is not None:
            ema.step(params)
        state.step += 1
        if on_step is not None:
            on_step({"step": state.step, "rank": rank, "world": world, "local_batch": tc["batch_size"] * accum,
                     "gathered_batch": len(losses), "sigma_used": None if sigma_used is None else sigma_used.tolist(),
                     "sigma_next": None if fbp is None else fbp.sigma.tolist(),
                     "q_used": None if q_used is None else q_used.tolist(),
                     "q_next": None if dro is None else dro.q.tolist()})
        checkpoint_now = state.step % tc["checkpoint_every"] == 0 or state.step == total
        if acc.is_main_process:
            pending.append((state.step, losses, groups_all, torch.cat(weighted), sigma_used if dro is None else q_used))
            if record is not None and record.get("bo"):
                state.bo_trace.append(_bo_row(state.step, record["bo"], group_cols))
            bar.update(1)
            if checkpoint_now or state.step % tc["log_every"] == 0:  # rows in bulk: same values, less per-step work
                state.metrics += _metrics_rows(pending, schema.n_groups, group_cols, state_cols)
                pending.clear()
                bar.set_postfix(loss=f"{state.metrics[-1]['loss']:.4f}", refresh=False)
            if tracker is not None:
                tracker.update(state)
        if checkpoint_now:
            save_checkpoint(out_dir, state, acc, unet, optimizer, ema, method_state, rank, tc["keep_checkpoints"])
    bar.close()
    if acc.is_main_process and state.step >= tc["steps"]:
        _save_final(out_dir, base, acc.unwrap_model(unet), ema)
        stage_keys.write_stamp(out_dir, st, complete=True, profile=cfg["profile"])
    acc.wait_for_everyone()
    acc.end_training()
    return out_dir


def _adamw_kernel(choice: str, device: torch.device) -> dict:
    """AdamW's multi-tensor kernels instead of its per-parameter Python loop (``train.adamw_kernel``).
    ``fused``: one fused kernel on every device; on the CPU about 3 ms less per mini step than
    ``foreach``, with updates that round differently from the loop's (weights about 1e-7 apart after a
    few steps). ``auto``: fused on CUDA, ``foreach`` elsewhere (bit-identical to the loop on the CPU),
    what runs trained before the setting existed used. Either repeats exactly run to run and on resume
    (a checkpoint's optimizer state carries its kernel)."""
    if choice not in config_mod.CHOICES["train.adamw_kernel"]:
        raise ValueError(f"train.adamw_kernel: expected one of {config_mod.CHOICES['train.adamw_kernel']}, "
                         f"got {choice!r}")
    return {"fused": True} if choice == "fused" or device.type == "cuda" else {"foreach": True}


def _make_perturbation(cfg: dict, method: str, rank: int) -> FairBayesianPerturbation | None:
    if method not in ("random", "fairbo"):
        return None
    f, schema = cfg["fbp"], get_schema(cfg["dataset"])
    return FairBayesianPerturbation(schema.n_groups, window=f["window"],
                                    exploitation=f["exploitation"], beta=f["beta"], clamp=f["clamp"],
                                    seed=cfg["seed"], bo=(method == "fairbo"), rank=rank,
                                    num_restarts=f["bo_restarts"], raw_samples=f["bo_raw_samples"],
                                    warm_start=f["warm_start"], gp_likelihood=f["gp_likelihood"],
                                    sigma_init=initial_sigma(cfg, schema), weight_floor=f["weight_floor"])


def initial_sigma(cfg: dict, schema) -> list[float]:
    """FBP's starting sigma, one per group in the flat order: ``fbp.sigma_groups`` where it names the
    group ("race=Black"), else ``fbp.sigma_init``."""
    return [float(cfg["fbp"]["sigma_groups"].get(c, cfg["fbp"]["sigma_init"])) for c in _group_columns(schema)]


def _attribute_indices(schema, names: list[str] | None) -> list[int] | None:
    """Attribute names of a baseline's ``attributes`` setting as schema indices (None: every attribute)."""
    return None if names is None else [schema.attribute_names.index(n) for n in names]


def _sampling_probs(cfg: dict, method: str, schema, groups: torch.Tensor) -> torch.Tensor | None:
    """Batch probabilities of the methods that draw group-balanced batches: ``resample`` over
    ``resample.attributes``, ``groupdro`` over its attribute when ``groupdro.balanced_batches``;
    None (uniform epochs) for the others."""
    if method == "resample":
        names = cfg["resample"]["attributes"]
    elif method == "groupdro" and cfg["groupdro"]["balanced_batches"]:
        names = [cfg["groupdro"]["attribute"]]
    else:
        return None
    return balanced_sampling_weights(groups, schema.n_groups, attributes=_attribute_indices(schema, names))


def _per_sample_loss(unet, noise_scheduler, cache: TrainingCache, idx: torch.Tensor, uncond_prob: float, device,
                     input_perturbation: float = 0.0):
    """l_i = mean over (C, H, W) of (prediction - target)^2 in fp32 (docs/method.md §1.2).

    ``input_perturbation`` gamma > 0 (docs/method.md §1.4): the UNet's input is noised with
    noise + gamma * fresh N(0, 1) noise while the target keeps the original noise. The extra noise is
    drawn last, so every other draw is the same as at gamma = 0, where nothing extra is drawn."""
    mean, std = cache.latent_mean[idx], cache.latent_std[idx]
    latents = (mean + std * torch.randn_like(mean)) * cache.scaling_factor
    text_rows = cache.prompt_index[idx].clone()
    if uncond_prob > 0:
        text_rows[torch.rand(len(idx)) < uncond_prob] = cache.uncond_index
    hidden = cache.text[text_rows]
    noise = torch.randn_like(latents)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), dtype=torch.long)
    if input_perturbation:
        noisy = noise_scheduler.add_noise(latents, noise + input_perturbation * torch.randn_like(noise), t)
    else:
        noisy = noise_scheduler.add_noise(latents, noise, t)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    elif noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        raise ValueError(f"unsupported prediction_type {noise_scheduler.config.prediction_type!r}")
    pred = unet(noisy.to(device), t.to(device), hidden.to(device)).sample
    per_sample = F.mse_loss(pred.float(), target.to(device).float(), reduction="none").mean(dim=(1, 2, 3))
    return per_sample, cache.groups[idx].to(device)


def _metrics_rows(pending: list[tuple], n_groups, group_cols, state_cols: list[str] | None = None) -> list[dict]:
    """metrics.csv rows of the steps kept since the last log, built in bulk: one move to the host
    and one vectorised group computation (:func:`step_group_stats`) instead of about 30 small
    conversions per step. Each entry is (step, gathered losses, groups, weighted losses, the method's
    per-group state used or None); the values are those a row built at its own step had (the means
    are taken on the host, per step, as before). That state is FBP's sigma, in columns
    ``sigma[<group>]``, unless ``state_cols`` names its columns (group DRO: ``q[race=Black]``, ...)."""
    if not pending:
        return []
    steps, losses, groups, weighted, sigmas = zip(*pending)
    losses, groups, weighted = torch.stack(losses).cpu(), torch.stack(groups).cpu(), torch.stack(weighted).cpu()
    means, gaps = step_group_stats(losses, groups, n_groups)
    loss_cols, sigma_cols = [f"loss[{c}]" for c in group_cols], state_cols or [f"sigma[{c}]" for c in group_cols]
    sigmas = torch.stack(sigmas).tolist() if sigmas[0] is not None else [None] * len(steps)
    rows = []
    for step, step_losses, step_weighted, gap, step_means, sigma in zip(steps, losses, weighted, gaps.tolist(),
                                                                       means.tolist(), sigmas):
        row = {"step": step, "loss": float(step_weighted.mean()), "loss_unweighted": float(step_losses.mean()),
               "gap": gap, "y": -gap, **dict(zip(loss_cols, step_means))}
        if sigma is not None:
            row.update(zip(sigma_cols, sigma))
        rows.append(row)
    return rows


def _bo_row(step: int, bo: dict, group_cols) -> dict:
    row = {"step": step, "acq_value": bo.get("acq_value"), "window_mean_y": bo.get("window_mean_y"),
           "n_points": bo.get("n_points"), "skipped": bo.get("skipped", "")}
    cand = bo.get("candidate")
    if cand is not None:
        row.update({f"candidate[{c}]": float(v) for c, v in zip(group_cols, torch.as_tensor(cand).flatten())})
    return row


# ---------------------------------------------------------------- run directory and checkpoints

def _claim_run_dir(out_dir: Path, st, resume: str | None) -> bool:
    """Train only into an empty folder or a run of ours with the same stage key (method, training
    settings, base): never overwrite what we did not create. Returns True when the run there is
    already complete (nothing to do)."""
    if stage_keys.is_empty(out_dir):
        return False
    stamp = stage_keys.read_stamp(out_dir)
    if stamp is None or stamp.get("stage") != "train":
        raise RunConflict(f"{out_dir}: not empty and not a fairdiff training run (no {stage_keys.STAMP} of ours); "
                          "choose another --out")
    if stamp["key"] != st.key:
        changes = "\n  ".join(stage_keys.differences(stamp, st))
        raise RunConflict(f"{out_dir}: holds a {stamp.get('method')} run made with other settings; nothing was "
                          f"changed. Differences (run -> now):\n  {changes}\nRetrain with --retrain (moves the old "
                          "run aside), or train elsewhere with --runs/--out.")
    if stamp.get("complete"):
        return True
    if resume is None and (out_dir / "checkpoints").is_dir():
        raise RunConflict(f"{out_dir}: already holds an unfinished run; resume it (resume='latest') or restart "
                          "it (--restart moves it aside)")
    return False


def _save_final(out_dir: Path, base: str, unet, ema) -> None:
    """The trained pipeline as a stock diffusers folder: ``unet`` holds the raw weights (what
    ``StableDiffusionPipeline.from_pretrained`` loads), ``unet_ema`` the EMA weights."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.unet = unet
    with io.atomic_dir(out_dir / "final") as tmp:
        pipe.save_pretrained(tmp)
        if ema is not None:
            ema_unet = type(unet).from_config(unet.config)
            ema.copy_to(ema_unet.parameters())
            ema_unet.save_pretrained(tmp / "unet_ema")
