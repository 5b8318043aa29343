"""Row-addressed arrays on disk: .npy files written in batches and read by rows, never held whole.

Caches that grow with the dataset (VAE latents, decoded real images) are standard ``.npy`` files,
so ``numpy.load`` reads them anywhere. A writer preallocates the file
(``numpy.lib.format.open_memmap``) and writes each batch of rows with ``os.pwrite``; a reader
fetches only the rows it is asked for with ``os.preadv``. Neither keeps a mapping of the file, so
the bytes go through the kernel's page cache (reclaimable) and never count towards the
process's resident memory, which then stays bounded by the batch whatever the number of rows.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def create(path: str | Path, shape: tuple[int, ...], dtype) -> None:
    """Preallocate a C-ordered ``.npy`` file of ``shape`` (contents undefined until written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=tuple(int(s) for s in shape))
    del array  # header and size written; nothing stays mapped


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the first row) of a ``.npy`` file, read from its header."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    if fortran:
        raise ValueError(f"{path}: a Fortran-ordered .npy file; row access needs C order")
    if dtype.hasobject:
        raise ValueError(f"{path}: holds Python objects; row access needs a plain numeric dtype")
    if not shape:
        raise ValueError(f"{path}: a 0-d array has no rows")
    return tuple(shape), dtype, offset


def write_rows(path: str | Path, start: int, rows: np.ndarray | torch.Tensor, sync: bool = False) -> None:
    """Write ``rows`` into the file at rows ``start .. start + len(rows)`` (shape and dtype must match).

    ``sync`` flushes them to the disk (fsync) before returning: call it before recording that
    these rows are done, so a crash never leaves a row marked done that was not written."""
    path = Path(path)
    shape, dtype, offset = _header(path)
    rows = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    if rows.shape[1:] != shape[1:] or rows.dtype != dtype:
        raise ValueError(f"{path}: rows of shape {shape[1:]} and dtype {dtype} expected; "
                         f"got {rows.shape[1:]} {rows.dtype}")
    if start < 0 or start + len(rows) > shape[0]:
        raise IndexError(f"{path}: rows {start}..{start + len(rows)} outside 0..{shape[0]}")
    data = memoryview(np.ascontiguousarray(rows)).cast("B")
    row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    fd = os.open(path, os.O_WRONLY)
    try:
        pos, done = offset + start * row_bytes, 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], pos + done)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


class NpyRows:
    """Read-only row access to a ``.npy`` file: ``rows[i]``, ``rows[a:b]``, ``rows[index_array]``.

    Returns fresh arrays (torch tensors with ``as_torch=True``); consecutive indices are read in
    one call. ``np.asarray(rows)`` reads everything (for small files and old call styles).
    Pickles by path, so DataLoader workers each open their own file descriptor."""

    def __init__(self, path: str | Path, as_torch: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such .npy file")
        self.shape, self.dtype, self._offset = _header(self.path)
        self.as_torch = as_torch
        self._row_shape = self.shape[1:]
        self._row_bytes = self.dtype.itemsize * int(np.prod(self._row_shape, dtype=np.int64))
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"NpyRows({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_pid")} | {"_fd": None, "_pid": -1}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _read_range(self, out: np.ndarray, start: int) -> None:
        view = memoryview(out).cast("B")
        pos, done = self._offset + start * self._row_bytes, 0
        while done < len(view):
            got = os.preadv(self._descriptor(), [view[done:]], pos + done)
            if got == 0:
                raise EOFError(f"{self.path}: file shorter than its header says (row {start})")
            done += got

    def _rows(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        n = len(self)
        if ((index < -n) | (index >= n)).any():
            raise IndexError(f"{self.path}: index out of range for {n} rows")
        index = np.where(index < 0, index + n, index)
        out = np.empty((len(index), *self._row_shape), dtype=self.dtype)
        i = 0
        while i < len(index):  # one read per run of consecutive rows
            j = i + 1
            while j < len(index) and index[j] == index[j - 1] + 1:
                j += 1
            self._read_range(out[i:j], int(index[i]))
            i = j
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            raise TypeError("NpyRows indexes rows only (one key); slice the result for more")
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        if isinstance(key, (int, np.integer)):
            out = self._rows(np.array([key]))[0]
        elif isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                out = np.empty((max(stop - start, 0), *self._row_shape), dtype=self.dtype)
                if len(out):
                    self._read_range(out, start)
            else:
                out = self._rows(np.arange(start, stop, step))
        else:
            key = np.asarray(key)
            if key.dtype == bool:
                key = np.flatnonzero(key)
            out = self._rows(key)
        return torch.from_numpy(out) if self.as_torch else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        out = out.numpy() if isinstance(out, torch.Tensor) else out
        return out if dtype is None else out.astype(dtype)
