"""The latent diffusion model: a tiny Stable-Diffusion-style pipeline built from configs, or a real one.

Both are standard diffusers folders (``StableDiffusionPipeline.from_pretrained`` reads them), so
the trainer, the sampler and a user's own scripts use one code path whatever the scale. With no
pretrained weights on this machine, the tiny default gets a word-level tokenizer built from the
schema's prompt vocabulary, a frozen randomly initialised CLIP text encoder (a fixed random
embedding of the prompt, which the UNet learns to read) and a VAE trained here on the training
images before any diffusion model sees them.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fairdiff.errors import PipelineNotFound  # noqa: F401 - raised here, importable from here
from fairdiff.schema import Schema



def quiet_hf() -> None:
    """Silence the per-component loading and saving bars of diffusers and transformers."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
# Stable Diffusion 2.1's noise schedule (docs/method.md §1.1).
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                   beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def schema_prompts(schema: Schema) -> list[str]:
    """Every prompt the schema can produce (unknown attributes included): the tokenizer's corpus."""
    attr_ids = [range(-1, a.n_groups) for a in schema.attributes]
    label_ids = [range(lab.n_classes) for lab in schema.labels]
    names = schema.attribute_names + schema.label_names
    return [schema.prompt(**dict(zip(names, combo))) for combo in itertools.product(*attr_ids, *label_ids)]


def build_tokenizer(schema: Schema):
    """A word-level tokenizer over the schema's vocabulary, padded to the longest prompt."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    prompts = schema_prompts(schema)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.train_from_iterator(prompts, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]",
        special_tokens=[("[BOS]", tok.token_to_id("[BOS]")), ("[EOS]", tok.token_to_id("[EOS]"))])
    longest = max(len(tok.encode(p).ids) for p in prompts)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]", model_max_length=longest)


def build_tiny_pipeline(model_cfg: dict, schema: Schema, resolution: int, seed: int = 0):
    """A Stable-Diffusion-style pipeline with tiny components built from ``model_cfg`` (untrained).

    Optional keys size it like a real one (benchmarks/gpu_check.py builds SD 2.1's shapes):
    ``text.max_length`` pads prompts to that many tokens (SD: 77), ``unet.use_linear_projection``
    (SD 2.x: true)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    quiet_hf()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(schema)
    t = model_cfg["text"]
    tokenizer.model_max_length = max(tokenizer.model_max_length, t.get("max_length") or 0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id))
    v = model_cfg["vae"]
    n_vae = len(v["block_out_channels"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n_vae,
                        up_block_types=("UpDecoderBlock2D",) * n_vae,
                        block_out_channels=tuple(v["block_out_channels"]), latent_channels=v["latent_channels"],
                        layers_per_block=v["layers_per_block"], norm_num_groups=v["norm_num_groups"],
                        sample_size=resolution)
    u = model_cfg["unet"]
    n_unet = len(u["block_out_channels"])
    down = ("CrossAttnDownBlock2D",) * (n_unet - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n_unet - 1)
    unet = UNet2DConditionModel(sample_size=resolution // 2 ** (n_vae - 1), in_channels=v["latent_channels"],
                                out_channels=v["latent_channels"], layers_per_block=u["layers_per_block"],
                                block_out_channels=tuple(u["block_out_channels"]), down_block_types=down,
                                up_block_types=up, cross_attention_dim=t["hidden_size"],
                                attention_head_dim=u["attention_head_dim"], norm_num_groups=u["norm_num_groups"],
                                use_linear_projection=u.get("use_linear_projection", False))
    scheduler = DDIMScheduler(prediction_type=model_cfg["prediction_type"], **SD_SCHEDULE)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


WITHDRAWN_SD21 = "stabilityai/stable-diffusion-2-1"


def pipeline_not_found_message(path_or_id: str | Path, err: BaseException) -> str:
    """What was tried, why it failed, and the two ways to a Stable Diffusion 2.1 pipeline today."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        tried = (f"the local folder {path.resolve()}, which exists but is not a complete diffusers pipeline "
                 "(it needs model_index.json and the unet/, vae/, text_encoder/, tokenizer/, scheduler/ folders)")
    elif path.is_absolute() or str(path_or_id).startswith((".", "~")) or str(path_or_id).count("/") != 1:
        tried = f"the local folder {path.resolve()}, which does not exist"
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = (f"the local hub cache only (HF_HUB_OFFLINE=1, HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')})"
                 if offline else "the Hugging Face hub")
        tried = f"the hub id {str(path_or_id)!r} in {where}, and no local folder of that name"
    return (f"cannot load a Stable Diffusion pipeline from model.pretrained = {str(path_or_id)!r}: tried {tried} "
            f"({type(err).__name__}: {_first_words(err)}). "
            f"Note: {WITHDRAWN_SD21!r}, the paper's base model, was withdrawn from the Hugging Face hub, so its id no "
            "longer downloads. Either point model.pretrained at a local copy of SD 2.1, a folder written by "
            "StableDiffusionPipeline.save_pretrained (e.g. on a machine that still has it cached: "
            "StableDiffusionPipeline.from_pretrained(<id>).save_pretrained('models/sd21')), or set it to the hub id "
            "of a community mirror of SD 2.1 whose files you have checked against the original, downloading it once "
            "with HF_HUB_OFFLINE=0 (it is then read from HF_HOME offline).")


def _first_words(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def load_pipeline(path_or_id: str | Path, unet: str = "raw", device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32):
    """Load a diffusers Stable Diffusion folder (ours or a real one) with the raw or EMA UNet."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    if unet not in ("raw", "ema"):
        raise ValueError(f"unet must be 'raw' or 'ema', got {unet!r}")
    quiet_hf()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(path_or_id), safety_checker=None,
                                                       requires_safety_checker=False, dtype=dtype)
    except (OSError, ValueError) as err:  # missing folder or file, unknown or unreachable hub id
        raise PipelineNotFound(pipeline_not_found_message(path_or_id, err)) from err
    if unet == "ema":
        ema_dir = Path(path_or_id) / "unet_ema"
        if not ema_dir.is_dir():
            raise FileNotFoundError(f"{ema_dir}: no EMA UNet in this pipeline folder (train with ema: true)")
        pipe.unet = UNet2DConditionModel.from_pretrained(ema_dir, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval()
    return pipe.to(device)


def train_vae(vae, images, steps: int, batch_size: int, lr: float, kl_weight: float, seed: int = 0,
              progress: bool = True, num_workers: int = 0, device: str | torch.device = "cpu",
              scale_sample: int = 256) -> list[float]:
    """Fit the VAE on images in [-1, 1] (MSE + small KL, as a stand-in for SD's pretrained VAE).

    ``images`` is a tensor [N, 3, R, R] or, to keep memory bounded by the batch, a Dataset whose
    items are such images or dicts with ``pixel_values`` (e.g. :class:`fairdiff.data.dataset.ImageRecordDataset`
    with ``cache=False``), read by ``num_workers`` DataLoader workers. Both draw the same rows and
    noise from ``seed``, so they train the same weights. Also sets ``scaling_factor`` so that
    latents have unit variance (as SD's 0.18215 does for its VAE), from ``scale_sample`` random
    images encoded ``batch_size`` at a time. Returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    vae.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    losses = []
    noise_shape = _latent_shape(vae, images, batch_size)
    batches = _vae_batches(images, steps, batch_size, seed, noise_shape, num_workers)
    bar = tqdm(range(steps), desc="vae", disable=not progress, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        rows, x = next(batches)
        if not torch.equal(rows, idx):
            raise RuntimeError("train_vae: the image loader drew other rows than the training loop (a bug)")
        x = x.to(device)
        posterior = vae.encode(x).latent_dist
        if tuple(posterior.mean.shape) != noise_shape:
            raise RuntimeError(f"train_vae: latents of shape {tuple(posterior.mean.shape)}, expected {noise_shape}")
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    vae.eval()
    with torch.no_grad():
        chosen = torch.randperm(len(images), generator=gen)[:scale_sample]
        means = [vae.encode(_stack_rows(images, rows).to(device)).latent_dist.mean.cpu()
                 for rows in chosen.split(batch_size)]
        std = torch.cat(means).std().item()
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    return losses


def _pixels(item) -> torch.Tensor:
    """An image tensor from a dataset item (a tensor, or a dict with ``pixel_values``)."""
    return item["pixel_values"] if isinstance(item, dict) else item


def _stack_rows(images, rows: torch.Tensor) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images[rows]
    return torch.stack([_pixels(images[int(i)]) for i in rows])


def _latent_shape(vae, images, batch_size: int) -> tuple[int, ...]:
    """The posterior's shape for one batch: the VAE halves the resolution once per block after the first."""
    side = _pixels(images[0]).shape[-1] // 2 ** (len(vae.config.block_out_channels) - 1)
    return (batch_size, vae.config.latent_channels, side, side)


class _ReplayBatches(torch.utils.data.Sampler):
    """The rows train_vae's loop draws, step by step, from a generator in lockstep with the loop's
    (it skips the noise the loop draws in between), so workers can read the images ahead."""

    def __init__(self, n: int, steps: int, batch_size: int, seed: int, noise_shape: tuple[int, ...]):
        self.n, self.steps, self.batch_size, self.seed, self.noise_shape = n, steps, batch_size, seed, noise_shape

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            rows = torch.randint(self.n, (self.batch_size,), generator=gen)
            torch.randn(self.noise_shape, generator=gen)
            yield rows.tolist()


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return i, _pixels(self.images[i])


def _vae_batches(images, steps: int, batch_size: int, seed: int, noise_shape, num_workers: int):
    """(rows, images) per step: slices of a tensor, or a DataLoader reading a dataset ahead."""
    sampler = _ReplayBatches(len(images), steps, batch_size, seed, noise_shape)
    if isinstance(images, torch.Tensor):
        return ((torch.tensor(rows), images[torch.tensor(rows)]) for rows in sampler)
    loader = torch.utils.data.DataLoader(_Indexed(images), batch_sampler=sampler, num_workers=num_workers,
                                         collate_fn=_collate_indexed)
    return iter(loader)


def _collate_indexed(items) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([i for i, _ in items]), torch.stack([x for _, x in items])


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image: the frozen VAE's part of every training step, done once."""
    vae.eval()
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        dist = vae.encode(images[start:start + batch_size]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Last hidden states of the frozen text encoder, as SD conditions its UNet."""
    text_encoder.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        ids = tokenizer(prompts[start:start + batch_size], padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        out.append(text_encoder(ids.to(text_encoder.device))[0])
    return torch.cat(out)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

