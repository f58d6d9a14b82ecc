import subprocess
import sys

import pytest
import torch

import feedback_alignment
from feedback_alignment.activations import get_activation
from feedback_alignment.backend import resolve_device, resolve_dtype
from feedback_alignment.errors import ConfigError


def test_version_and_cli_entry():
    out = subprocess.run(
        [sys.executable, "-m", "feedback_alignment.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert feedback_alignment.__version__ in out.stdout


@pytest.mark.parametrize("bad", ["float16", "double", torch.int32])
def test_bad_dtype_names_value(bad):
    with pytest.raises(ConfigError, match="float32, float64") as exc:
        resolve_dtype(bad)
    assert str(bad) in str(exc.value) or repr(bad) in str(exc.value)


def test_unavailable_device():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="'cuda'.*not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="'tpu'"):
        resolve_device("tpu")


def test_unknown_activation():
    with pytest.raises(ConfigError, match='"swish".*accepted: linear, relu'):
        get_activation("swish")


@pytest.mark.parametrize("name", ["linear", "relu", "tanh", "sigmoid", "erf"])
def test_activation_derivatives_match_autograd(name):
    act = get_activation(name)
    z = torch.linspace(-3, 3, 101, dtype=torch.float64).requires_grad_()
    (g,) = torch.autograd.grad(act(z).sum(), z)
    torch.testing.assert_close(act.deriv(z.detach()), g, rtol=1e-12, atol=1e-12)
