"""fairdiff: FairDiffusion (equity-aware fine-tuning of latent diffusion models) reimplemented."""
from fairdiff import env as _env

_env.setup()

__version__ = "0.1.0"
