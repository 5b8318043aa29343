"""A torch Dataset over any loader's DataFrame: preprocessed image, prompt, group and label ids.

Every loader (FairGenMed, HAM10000, CheXpert) writes the column conventions of
:mod:`fairdiff.schema`, so this one class serves them all; the schema says which columns are the
attributes and labels and whether the images are rotated for training.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import Dataset

from fairdiff.data.images import load_image, pipeline_kwargs, prepare_uint8, uint8_to_unit
from fairdiff.schema import Schema


class ImageRecordDataset(Dataset):
    """Items ``dict(pixel_values [3,R,R] in [-1,1], prompt, groups [A], labels [L], index)``.

    ``groups`` holds the attribute ids in schema order (-1 unknown), ``labels`` the class ids in
    schema order, ``index`` the row position in ``frame``. ``preprocess`` is ``"ours"`` or
    ``"authors"`` (the authors' HAM10000 / CheXpert pipeline: squashed to 200 px and rotated; see
    :mod:`fairdiff.data.images`); ``rotate=None`` follows that choice (``"ours"``:
    ``schema.rotate``), a bool overrides it. With ``cache=True`` each image is decoded and preprocessed once and kept
    as uint8 (3 R^2 bytes, e.g. 12 KiB at R = 64, 768 KiB at R = 512), which gives the same
    float tensor bit for bit on later epochs; with DataLoader workers each worker keeps its own
    cache.
    """

    def __init__(self, frame: pd.DataFrame, schema: Schema, resolution: int, rotate: bool | None = None,
                 cache: bool = True, preprocess: str = "ours"):
        needed = ["image_path", "prompt", *schema.attribute_names, *schema.label_names]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"the {schema.name} frame lacks the columns {missing}; "
                             f"expected {needed} (see fairdiff.schema)")
        self.schema = schema
        self.resolution = int(resolution)
        self.pipeline = pipeline_kwargs(schema, preprocess, rotate)  # {"rotate": bool, "preprocess": str}
        self.rotate = self.pipeline["rotate"]
        self.image_paths = frame["image_path"].astype(str).tolist()
        self.prompts = frame["prompt"].astype(str).tolist()
        self.groups = torch.tensor(frame[schema.attribute_names].to_numpy(dtype="int64")).reshape(len(frame), -1)
        self.labels = torch.tensor(frame[schema.label_names].to_numpy(dtype="int64")).reshape(len(frame), -1)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.image_paths)

    def pixels_uint8(self, index: int) -> torch.Tensor:
        """The preprocessed image of row ``index`` as uint8 [3, R, R] (cached if enabled)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        pixels = prepare_uint8(load_image(self.image_paths[index]), self.resolution, **self.pipeline)
        if self._cache is not None:
            self._cache[index] = pixels
        return pixels

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        return {
            "pixel_values": uint8_to_unit(self.pixels_uint8(index)),
            "prompt": self.prompts[index],
            "groups": self.groups[index].clone(),
            "labels": self.labels[index].clone(),
            "index": index,
        }
