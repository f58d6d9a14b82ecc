"""The row-space step for ReLU and tanh as one compiled C++ pass (``rowspace.cpp``).

With torch ops a row-space step makes about nine passes over (k, p, n) arrays: the
products are cheap (n = 50) and memory traffic is the cost. The kernel here reads each
row of Z and A once, does the row's share of Z <- keep Z - M G in registers, updates beta
and accumulates the next step's output from the new row, and writes Z and A back: one
pass. It is built on first use with the system C++ compiler (``$CXX`` or ``c++``, ``-O3
-march=native -fopenmp``, about a second) into a per-user cache keyed by the source, the
compiler and the CPU, and runs on ``torch.get_num_threads()`` OpenMP threads; the OpenMP
runtime is the one torch has loaded, so these are torch's threads, not a second pool
competing with them for the cores (the kernels are linked against the libgomp file torch
loaded, whatever it is called). Sums are cut into fixed blocks of rows, so the numbers
depend neither on the thread count nor on chunking. Where it cannot be built (no
compiler) or does not apply (another activation, not the CPU, one X per member, n > 1024), the
engine uses the torch ops; ``FA_NATIVE=0`` turns it off. Results equal the torch path's up
to the order of float sums.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("rowspace.cpp")
# activations with native kernels: name -> the torch function they must be
KERNELS = {"relu": torch.relu, "tanh": torch.tanh}
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-fPIC", "-fopenmp"]
# below this many elements a kernel runs on one thread (waking the others costs more)
_MIN_PARALLEL = 1 << 14

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "feedback-alignment" / "native"


def _torch_openmp() -> str | None:
    """The OpenMP runtime torch has loaded (its own libgomp, whatever its file name), so
    the kernels link against that one and share torch's threads; None if not found."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "libgomp" in ln and "/" in ln}
    except OSError:
        return None
    return min(paths) if len(paths) == 1 else None


def _commands(cxx: str, out: str, gomp: str | None) -> list[list[str]]:
    if gomp is None:  # the compiler's own OpenMP runtime
        return [[cxx, *_FLAGS, "-shared", "-o", out, str(_SOURCE)]]
    obj = out + ".o"  # compile with OpenMP, link torch's runtime instead of the system's
    return [
        [cxx, *_FLAGS, "-c", "-o", obj, str(_SOURCE)],
        [cxx, "-shared", "-o", out, obj, gomp, f"-Wl,-rpath,{os.path.dirname(gomp)}"],
    ]


def _build() -> ctypes.CDLL:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX)")
    gomp = _torch_openmp()
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + f"{cxx} {_FLAGS} {gomp} {_cpu_id()}".encode()).hexdigest()[:16]
    out = _cache_dir() / f"rowspace-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            for cmd in _commands(cxx, tmp, gomp):
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"{cxx} failed: {res.stderr.strip().splitlines()[:1]}")
            os.replace(tmp, out)  # atomic: a concurrent build never loads half a file
        finally:
            for leftover in (tmp, tmp + ".o"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
    lib = ctypes.CDLL(str(out))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for suf in ("f32", "f64"):
        for act in KERNELS:
            getattr(lib, f"fa_forward_{act}_{suf}").argtypes = (
                [i64] * 4 + [ptr] * 4 + [ctypes.c_int]
            )
            getattr(lib, f"fa_update_{act}_{suf}").argtypes = (
                [i64] * 4 + [ptr] * 11 + [ctypes.c_int]
            )
        getattr(lib, f"fa_eval_tanh_{suf}").argtypes = [i64, ptr, ptr, ptr]
    lib.fa_max_n.restype = i64
    lib.fa_vec_bytes.restype = i64
    lib.fa_units_per_member.restype = i64
    lib.fa_units_per_member.argtypes = [i64]
    return lib


def library() -> ctypes.CDLL | None:
    """The built kernels, or None (with one warning a process) where they can't be built."""
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is None and _failed is None:
            try:
                _lib = _build()
            except Exception as exc:  # noqa: BLE001 -- any build failure: torch ops instead
                _failed = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"native row-space kernels unavailable ({_failed}); using torch ops",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _lib


def applies(act, X: torch.Tensor, n: int) -> bool:
    """Whether the kernels can run this fit: ReLU or tanh (the built-in ones), the CPU, one
    shared X, float32/64, n <= 1024."""
    return (
        os.environ.get("FA_NATIVE", "1") != "0"
        and KERNELS.get(act.name) is act.fn
        and X.device.type == "cpu"
        and X.dim() == 2
        and X.dtype in (torch.float32, torch.float64)
        and (lib := library()) is not None
        and 1 <= n <= lib.fa_max_n()  # the kernels' stack buffers
    )


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _threads(elements: int) -> int:
    return torch.get_num_threads() if elements >= _MIN_PARALLEL else 1


class RowSpaceKernels:
    """The kernels for one activation, bound to one fit's G (n, n)."""

    def __init__(self, G: torch.Tensor, activation: str):
        self.lib = library()
        self.n = G.shape[0]
        lanes = self.lib.fa_vec_bytes() // G.element_size()
        self.npad = -(-self.n // lanes) * lanes
        self.Gp = torch.zeros(self.n, self.npad, dtype=G.dtype)
        self.Gp[:, : self.n] = G
        self.suf = "f32" if G.dtype == torch.float32 else "f64"
        self._fwd = getattr(self.lib, f"fa_forward_{activation}_{self.suf}")
        self._upd = getattr(self.lib, f"fa_update_{activation}_{self.suf}")

    def _u_buffers(self, Z: torch.Tensor):
        k, p, n = Z.shape
        units = torch.empty(k * self.lib.fa_units_per_member(p), n, dtype=Z.dtype)
        return units, torch.empty(k, n, dtype=Z.dtype)

    def forward(self, Z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """beta^T psi(Z) per member, (k, n) (without the 1/sqrt p)."""
        k, p, n = Z.shape
        units, u = self._u_buffers(Z)
        self._fwd(
            k, p, n, self.npad, _ptr(Z), _ptr(beta), _ptr(units), _ptr(u), _threads(Z.numel())
        )
        return u

    def update(self, Z, A, ce, fb_lr, keep, beta, lr, lam) -> torch.Tensor:
        """One step in place: A <- keep A - M, Z <- keep Z - M G, beta <- beta - lr (psi(Z)
        ce + lam beta); returns the next step's beta^T psi(Z) (k, n), as :meth:`forward`."""
        k, p, n = Z.shape
        cep = torch.zeros(k, self.npad, dtype=Z.dtype)  # ce padded like Gp
        cep[:, :n] = ce
        units, u = self._u_buffers(Z)
        fb_lr, lr, lam = fb_lr.contiguous(), lr.contiguous(), lam.contiguous()
        keep = None if keep is None else keep.contiguous()
        self._upd(
            k,
            p,
            n,
            self.npad,
            _ptr(Z),
            _ptr(A),
            _ptr(self.Gp),
            _ptr(cep),
            _ptr(fb_lr),
            _ptr(keep),
            _ptr(beta),
            _ptr(lr),
            _ptr(lam),
            _ptr(units),
            _ptr(u),
            _threads(Z.numel()),
        )
        return u


def tanh(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tanh and its derivative as the native kernels compute them (for the tests)."""
    lib = library()
    lanes = lib.fa_vec_bytes() // z.element_size()
    flat = z.reshape(-1)
    padded = torch.zeros(-(-flat.numel() // lanes) * lanes, dtype=z.dtype)
    padded[: flat.numel()] = flat
    psi, dpsi = torch.empty_like(padded), torch.empty_like(padded)
    suf = "f32" if z.dtype == torch.float32 else "f64"
    getattr(lib, f"fa_eval_tanh_{suf}")(padded.numel(), _ptr(padded), _ptr(psi), _ptr(dpsi))
    m = flat.numel()
    return psi[:m].view_as(z), dpsi[:m].view_as(z)
