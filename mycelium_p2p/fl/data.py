"""Task data without a model: the digits shards and a user's own array files, numpy only.

Data is split deterministically, so every node that names the same shard, domain and seed holds
the same samples. Domain shifts (rotated images, permuted labels) give groups genuinely different
tasks to specialise on. Importing this module loads neither torch nor scikit-learn, so a node
running its own (numpy) ClientApp never pays for them.
"""

from __future__ import annotations

import lzma
import math
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from numpy.lib import format as npy_format

from ..errors import DataError

_SHARD = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")
_MAX_CLASSES = 10_000  # a label beyond this is a data bug, not a model to allocate


@dataclass(frozen=True)
class Dataset:
    """Train and test splits: float32 features (n, d) and int64 labels in [0, num_classes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)`` with ``0 <= i < n``."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise DataError(f"data shard {text!r}: expected 'i/n', e.g. '0/4'")
    i, n = int(match[1]), int(match[2])
    if not 0 <= i < n:
        raise DataError(f"data shard {text!r}: need 0 <= i < n")
    return i, n


def rotate(images: np.ndarray, domain: int) -> np.ndarray:
    """Flattened 8x8 images, each rotated by ``domain`` * 90 degrees."""
    grids = np.rot90(images.reshape(len(images), 8, 8), k=domain % 4, axes=(1, 2))
    rotated: np.ndarray = grids.reshape(len(images), 64).copy()
    return rotated


def permute_labels(y: np.ndarray, domain: int, num_classes: int = 10) -> np.ndarray:
    """Labels relabelled by a permutation fixed by ``domain``; domain 0 keeps them."""
    if domain < 0:
        raise ValueError(f"domain must be >= 0, got {domain}")
    relabelled: np.ndarray = (
        y.copy() if domain == 0 else np.random.default_rng(domain).permutation(num_classes)[y]
    )
    return relabelled


def _class_rank(y: np.ndarray) -> np.ndarray:
    """For each sample, how many earlier samples share its label."""
    rank = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        rank[where] = np.arange(len(where))
    return rank


def _split(x: np.ndarray, y: np.ndarray, num_classes: int, test_fraction: float) -> Dataset:
    """Hold out ``test_fraction`` of already shuffled samples, spread evenly over the labels."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(max(round(len(y) * test_fraction), 1), len(y) - 1)
    # Each sample's relative position within its class: taking the smallest first is stratified.
    position = (_class_rank(y) + 0.5) / np.bincount(y)[y]
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.argsort(position, kind="stable")[:n_test]] = True
    return Dataset(x[~is_test], y[~is_test], x[is_test], y[is_test], num_classes)


def load_digits_task(
    shard: tuple[int, int] = (0, 1),
    domain: int = 0,
    *,
    shift: str = "rotate",
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """Shard ``i`` of ``n`` of scikit-learn's digits, stratified by label, with a domain shift."""
    from sklearn.datasets import load_digits  # costs ~2 s to import; only digits nodes pay

    i, n = shard
    if not 0 <= i < n:
        raise DataError(f"data shard {i}/{n}: need 0 <= i < n")
    digits = load_digits()
    perm = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data[perm] / 16.0).astype(np.float32)
    y = digits.target[perm].astype(np.int64)
    if shift == "rotate":
        x = rotate(x, domain)
    elif shift == "labels":
        y = permute_labels(y, domain)
    else:
        raise DataError(f"shift {shift!r}: expected 'rotate' or 'labels'")
    mine = _class_rank(y) % n == i  # deal each class round-robin over the shards
    if mine.sum() < 2:
        raise DataError(f"data shard {i}/{n}: only {mine.sum()} of {len(y)} digits")
    return _split(x[mine], y[mine], 10, test_fraction)


def _first_line(exc: Exception) -> str:
    """A library error as one line, so DataError messages stay one line."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


# zipfile: RuntimeError for an encrypted member, NotImplementedError for an unknown
# compression method, zlib/lzma errors for corrupt compressed data.
_UNREADABLE_ZIP = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    lzma.LZMAError,
)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an .npz archive")
        with archive:
            members = cast(zipfile.ZipFile, archive.zip)  # None only once the archive is closed
            for key in ("x", "y"):
                if key not in archive.files:
                    raise DataError(f"{path}: no array {key!r} (found {sorted(archive.files)})")
                _check_declared_size(path, members.getinfo(f"{key}.npy"), members)
            return archive["x"], archive["y"]
    except _UNREADABLE_ZIP as exc:
        raise DataError(f"{path}: not a readable .npz archive: {_first_line(exc)}") from None
    except MemoryError:
        raise DataError(f"{path}: its arrays do not fit in memory") from None


def _check_declared_size(path: Path, info: zipfile.ZipInfo, archive: zipfile.ZipFile) -> None:
    """numpy allocates the shape an array's header declares before reading its bytes: refuse
    a shape larger than the bytes the archive says it holds (MemoryError at 146 TiB)."""
    with archive.open(info) as fh:
        major, _ = npy_format.read_magic(fh)
        read = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
        shape, _, dtype = read(fh)
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise DataError(f"{path}: {info.filename} declares shape {shape}, more than it holds")


def _is_numeric_row(line: str) -> bool:
    try:
        for cell in line.split(","):
            float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if lines and not _is_numeric_row(lines[0]):
            lines = lines[1:]  # a header row
        if not lines:
            raise DataError(f"{path}: no data rows")
        table = np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a numeric CSV table: {_first_line(exc)}") from None
    if table.shape[1] < 2:
        raise DataError(f"{path}: need feature columns and a last label column")
    return table[:, :-1], table[:, -1]


def _check_labels(path: Path, y: np.ndarray) -> np.ndarray:
    """Labels as int64, refusing anything that is not a small non-negative integer."""
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{path}: labels must be integers")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, found {y.min()}")
    if y.max() >= _MAX_CLASSES:
        raise DataError(f"{path}: label {y.max()} is over the {_MAX_CLASSES}-class limit")
    return y.astype(np.int64)


def load_array_file(path: str | Path, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """A user's ``.npz`` (arrays ``x``, ``y``) or ``.csv`` (label last) as a shuffled Dataset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y = _read_npz(path)
    elif suffix == ".csv":
        x, y = _read_csv(path)
    else:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; use .npz or .csv")
    if x.ndim not in (2, 3) or 0 in x.shape[1:]:
        raise DataError(f"{path}: x must have shape (n, d) or (n, h, w), got {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{path}: y must have shape (n,), got {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} samples in x but {len(y)} labels in y")
    if len(y) < 2:
        raise DataError(f"{path}: need at least 2 samples, got {len(y)}")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: features must be numbers, got dtype {x.dtype}")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
        features = x.reshape(len(x), -1).astype(np.float32)
    if not np.isfinite(features).all():
        raise DataError(f"{path}: features contain NaN or infinite (or beyond float32) values")
    labels = _check_labels(path, y)
    perm = np.random.default_rng(seed).permutation(len(labels))
    num_classes = max(int(labels.max()) + 1, 2)
    return _split(features[perm], labels[perm], num_classes, test_fraction)
