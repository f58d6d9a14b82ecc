"""The row-space step (linear, ReLU, tanh, sigmoid) as one C++ pass (``rowspace.cpp``).

With torch ops a row-space step makes about nine passes over (k, p, n) arrays: the
products are cheap (n = 50) and memory traffic is the cost. The kernel here reads each
number of Z and A once, a block of hidden units at a time: it does the block's share of
Z <- keep Z - M G in registers, updates beta and accumulates the next step's output from
the new block, and writes Z and A back: one pass (and no A at all when the fit keeps no
weights). Z and A are read in column layout (:func:`column_layout`), so every operation
runs on vectors of consecutive hidden units. G = X X^T is one matrix shared by
all members or one per member (the paper's E1 draws new data for every repetition).

It is built on first use with the system C++ compiler (``$CXX`` or ``c++``, ``-O3
-march=native -fopenmp``, at most ``FA_NATIVE_BUILD_TIMEOUT`` seconds, 120 unless set)
into a per-user cache keyed by the source, the compiler and its version, the flags, the
vector width and the CPU. Each cached library has a record beside it (``.so.json``: its
SHA-256 and size, written when it was built) and is verified against it before it is
loaded; a library that is missing, truncated, empty, garbage or unrecorded is rebuilt
once, with one warning saying so, and a compiler that exits 0 having written no library
is an error, never a cache entry (so no state of the cache can crash a fit, as loading a
truncated library would with SIGBUS, or keep it on the torch ops for good).

The vector width is read from the CPU: 64 bytes with AVX-512,
32 with AVX2, 16 with SSE2 or NEON (``FA_NATIVE_VEC_BYTES`` forces one); on a CPU with
none of these the engine uses the torch ops. It runs on ``torch.get_num_threads()``
OpenMP threads; the OpenMP runtime is the one torch has loaded, so these are torch's
threads, not a second pool competing with them for the cores (the kernels are linked
against the libgomp file torch loaded, whatever it is called). Sums are cut into fixed
blocks of rows, so the numbers depend neither on the thread count nor on chunking.

:meth:`RowSpaceKernels.steps` takes a run of steps in one call (the engine's runs of
steps with nothing to record or check between them, rules ``fa`` and ``bp``): the error
and its scaled form are made in C++ with the roundings of the engine's torch ops, so the
numbers are those of :meth:`~RowSpaceKernels.update` step by step, without Python between.

Which activations have kernels here is theirs to say (``Activation.native``, the name of
their functions in ``rowspace.cpp``). Whether the kernels can run a fit is :func:`why_not`
(activation, CPU, dtype, n <= 1024,
a compiler); whether they do is the fit's ``kernels`` option (:mod:`..kernels`), with
``FA_NATIVE`` (:func:`mode`) overriding its ``"auto"``. Every tensor is checked at the
boundary (device, dtype, shape, contiguity) before the kernels read its memory. Results
equal the torch path's up to the order of float sums.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from ...activations import Activation, get_activation, with_native
from ...bounds import check_memory, is_int
from ...errors import ConfigError, need
from ...hardware import cpu_flags as _cpu_flags
from ...hardware import cpu_id as _cpu_id

_SOURCE = Path(__file__).with_name("rowspace.cpp")
_PARTS = (32, 64)  # FA_PART: the float and the double kernels, compiled apart
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-fPIC", "-fopenmp"]
VEC_BYTES = (16, 32, 64)
_BUILD_TIMEOUT = 120.0  # seconds; a compiler that hangs must not hang the fit
# below this many elements a kernel runs on one thread (waking the others costs more)
_MIN_PARALLEL = 1 << 14

_MAX_RUN = 1 << 20  # most steps in one call of RowSpaceKernels.steps
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def vector_bytes() -> tuple[int | None, str]:
    """(width in bytes the kernels are built for, where it came from); width None where
    this CPU has no vector unit the kernels are written for (then the torch ops run).

    ``FA_NATIVE_VEC_BYTES`` (16, 32 or 64) forces a width; otherwise it is the CPU's:
    64 with AVX-512, 32 with AVX2, 16 with SSE2 or NEON."""
    forced = os.environ.get("FA_NATIVE_VEC_BYTES")
    if forced:
        need(forced in {str(v) for v in VEC_BYTES}, "FA_NATIVE_VEC_BYTES", forced, "16, 32 or 64")
        return int(forced), "FA_NATIVE_VEC_BYTES"
    flags = _cpu_flags()
    if flags is not None:
        if "avx512f" in flags:
            return 64, "avx512f"
        if "avx2" in flags and "fma" in flags:
            return 32, "avx2+fma"
        if flags & {"sse2", "asimd", "neon"}:
            return 16, "sse2" if "sse2" in flags else "neon"
        return None, "no AVX-512, AVX2, SSE2 or NEON in /proc/cpuinfo"
    # no /proc/cpuinfo: what torch dispatches to on this CPU
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return 64, f"torch cpu capability {cap}"
    if cap == "AVX2":
        return 32, f"torch cpu capability {cap}"
    if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        return 16, f"{platform.machine()} baseline"  # SSE2 / NEON are part of the ISA
    return None, f"unknown vector unit on {platform.machine() or 'this CPU'}"


def _compiler_version(cxx: str) -> str:
    try:
        res = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{cxx} --version failed ({type(exc).__name__})") from None
    if res.returncode != 0:
        raise RuntimeError(f"{cxx} --version exited with status {res.returncode}")
    return res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""


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


def _commands(cxx: str, flags: list[str], out: str, gomp: str | None):
    """(the compile commands, one object per part of ``rowspace.cpp``, run side by side;
    the link command): the float and double kernels compile apart (``FA_PART``), each in
    about half the time of the whole."""
    objs = [f"{out}.{part}.o" for part in _PARTS]
    compiles = [
        [cxx, *flags, f"-DFA_PART={part}", "-c", "-o", obj, str(_SOURCE)]
        for part, obj in zip(_PARTS, objs, strict=True)
    ]
    if gomp is None:  # the compiler's own OpenMP runtime
        return compiles, [cxx, "-shared", "-fopenmp", "-o", out, *objs]
    # link torch's runtime instead of the system's
    return compiles, [cxx, "-shared", "-o", out, *objs, gomp, f"-Wl,-rpath,{os.path.dirname(gomp)}"]


def _run_all(cxx: str, compiles: list[list[str]], link: list[str], timeout: float) -> None:
    """Run the compiles side by side, then the link, all within ``timeout`` seconds; the
    first failure (with the compiler's first line) or the timeout is a RuntimeError."""
    deadline = time.monotonic() + timeout
    for stage in (compiles, [link]):
        procs: list[subprocess.Popen] = []
        try:  # (a command that cannot start leaves none of the others running)
            for cmd in stage:
                pipe = subprocess.PIPE
                procs.append(subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True))
            for proc in procs:
                try:
                    _, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"{cxx} took over {timeout:g} s (FA_NATIVE_BUILD_TIMEOUT)"
                    ) from None
                if proc.returncode != 0:
                    raise RuntimeError(f"{cxx} failed: {err.strip().splitlines()[:1]}")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _build_timeout() -> float:
    raw = os.environ.get("FA_NATIVE_BUILD_TIMEOUT")
    if raw is None:
        return _BUILD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    need(value > 0, "FA_NATIVE_BUILD_TIMEOUT", raw, "a positive number of seconds")
    return value


def _cache_key(cxx: str, version: str, flags: list[str], gomp: str | None) -> str:
    """The build's name in the cache: a new source, compiler (version), flag, OpenMP
    runtime or CPU is a new build."""
    ident = f"{cxx} {version} {flags} {gomp} {_cpu_id()}"
    return hashlib.sha256(_SOURCE.read_bytes() + ident.encode()).hexdigest()[:16]


def _build() -> ctypes.CDLL:
    width, origin = vector_bytes()
    if width is None:
        raise RuntimeError(origin)
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX)")
    timeout = _build_timeout()
    version = _compiler_version(cxx)
    flags = [*_FLAGS, f"-DFA_VEC_BYTES={width}"]
    gomp = _torch_openmp()
    key = _cache_key(cxx, version, flags, gomp)
    out = _cache_dir() / f"rowspace-{width * 8}bit-{key}.so"
    problem = _cache_problem(out)
    if problem is not None:
        if problem != "missing":
            warnings.warn(
                f"native kernels: the cached {out} is not usable ({problem}); rebuilding it",
                RuntimeWarning,
                stacklevel=4,
            )
        _compile(cxx, flags, gomp, out, timeout)
    try:
        return _load(out, width, key)
    except (OSError, AttributeError) as exc:
        if problem is not None:
            raise  # just built: the compiler's library does not load
        # verified but not loadable (an old build, a changed system library): rebuild once
        warnings.warn(
            f"native kernels: the cached {out} does not load ({exc}); rebuilding it",
            RuntimeWarning,
            stacklevel=4,
        )
        _compile(cxx, flags, gomp, out, timeout)
        return _load(out, width, key)


def _record_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".json")


def _digest(path: Path) -> tuple[str, int]:
    """(SHA-256, size) of the bytes in ``path``."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _cache_problem(lib: Path) -> str | None:
    """Why the cached library at ``lib`` cannot be trusted (None where it can): it must be
    a regular file whose size and SHA-256 equal the record written when it was built
    (``<lib>.json``). A truncated library would crash the process when loaded (SIGBUS),
    an empty or garbage one would fail to load: both are rebuilt instead."""
    rec = _record_path(lib)
    try:
        st = os.lstat(lib)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    try:
        if not stat.S_ISREG(os.lstat(rec).st_mode):
            return "its record is not a regular file"
        with open(rec, encoding="utf-8") as f:
            want = json.load(f)
        size, digest = int(want["size"]), str(want["sha256"])
    except FileNotFoundError:
        return "no record of its hash and size"
    except (OSError, ValueError, TypeError, KeyError):
        return "its record of hash and size is unreadable"
    if st.st_size != size:
        return f"{st.st_size} bytes, built as {size}"
    try:
        got = _digest(lib)[0]
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if got != digest:
        return "its SHA-256 differs from the one recorded when it was built"
    return None


def _compile(cxx: str, flags: list[str], gomp: str | None, out: Path, timeout: float) -> None:
    """Compile into a temporary file, check it is a shared library, record its hash and
    size, and rename both into place (atomic: a concurrent build never loads half a
    file). A compiler that wrote nothing, or not a library, is an error, never cached."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        _run_all(cxx, *_commands(cxx, flags, tmp, gomp), timeout)
        with open(tmp, "rb") as f:
            magic = f.read(4)
        if magic != b"\x7fELF":
            what = "nothing" if not magic else "no shared library"
            raise RuntimeError(f"{cxx} exited 0 but wrote {what} (nothing was cached)")
        digest, size = _digest(Path(tmp))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
        rec = _record_path(out)
        fd, rtmp = tempfile.mkstemp(suffix=".json", dir=out.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"sha256": digest, "size": size}, f)
        os.chmod(rtmp, 0o644)
        os.replace(rtmp, rec)
    finally:
        for leftover in (tmp, *(f"{tmp}.{part}.o" for part in _PARTS)):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _load(path: Path, width: int, key: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    u64 = ctypes.c_uint64
    for suf, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        for name in ("linear", "relu", "tanh", "sigmoid"):
            getattr(lib, f"fa_eval_{name}_{suf}").argtypes = [i64, ptr, ptr, ptr]
        getattr(lib, f"fa_keep_scale_{suf}").argtypes = [u64, u64, real, i64, i64, i64, ptr]
    lib.fa_max_n.restype = i64
    lib.fa_vec_bytes.restype = i64
    lib.fa_panel.restype = i64
    lib.key = key  # identifies the build (the self-check's cache is keyed by it)
    if lib.fa_vec_bytes() != width:
        raise RuntimeError(f"built for {lib.fa_vec_bytes()} bytes, asked for {width}")
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


def unavailable() -> str | None:
    """Why the kernels cannot be built or loaded here (None if they can)."""
    library()
    return _failed


def mode() -> str:
    """``FA_NATIVE``, which overrides ``kernels="auto"`` only: "0" (never native), "1"
    (native wherever they apply, no self-check) or "auto" (unset: the self-check decides)."""
    value = os.environ.get("FA_NATIVE", "auto")
    need(value in ("0", "1", "auto"), "FA_NATIVE", value, "0, 1 or auto")
    return value


def check_environment() -> None:
    """Check every ``FA_NATIVE*`` variable (``FA_NATIVE``, ``FA_NATIVE_VEC_BYTES``,
    ``FA_NATIVE_BUILD_TIMEOUT``) up front: commands call this before any work or any
    file, so a bad value is one line, not a failure of every run later."""
    mode()
    vector_bytes()
    _build_timeout()


def _entry(lib: ctypes.CDLL, kind: str, act: Activation, suf: str):
    """The library's function ``fa_{kind}_{native}_{suf}`` for ``act``, typed."""
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn = getattr(lib, f"fa_{kind}_{act.native}_{suf}")
    masks = [ptr, i64, ptr, ptr]  # keys, t, thr, scale
    if kind == "forward":  # k p n, Z beta, masks, u_units u, threads
        fn.argtypes = [i64] * 3 + [ptr] * 2 + masks + [ptr] * 2 + [ctypes.c_int]
    elif kind == "steps":  # steps k p n, Z A G, g_stride, y, sqrt_p c_p, fb_lr keep beta lr
        real = ctypes.c_float if suf == "f32" else ctypes.c_double  # lam, masks, fb_beta,
        fn.argtypes = [i64] * 4 + [ptr] * 3 + [i64, ptr, real, real] + [ptr] * 5 + masks
        fn.argtypes += [ptr] * 4 + [ctypes.c_int]  # e u_units u, threads
    else:  # k p n, Z A G, g_stride, ce fb_lr keep beta lr lam, masks, u_units u, threads
        fn.argtypes = [i64] * 3 + [ptr] * 3 + [i64] + [ptr] * 6 + masks + [ptr] * 2
        fn.argtypes += [ctypes.c_int]
    return fn


def why_not(act: Activation, X: torch.Tensor, n: int) -> str | None:
    """Why the kernels cannot run this fit, or None where they can: an activation that has
    native kernels (``act.native``: linear, ReLU, tanh, sigmoid), the CPU, X (n, d) shared
    or (K, n, d) one per member, float32/64, n <= 1024 and a compiler."""
    if act.native is None:
        return f"no native kernels for activation {act.name!r} (only {', '.join(with_native())})"
    if X.device.type != "cpu":
        return f"native kernels run on the CPU, X is on {X.device.type}"
    if X.dtype not in (torch.float32, torch.float64):
        return f"native kernels take float32 or float64, got {X.dtype}"
    if X.dim() not in (2, 3):
        return f"X must be (n, d) or (K, n, d), got {tuple(X.shape)}"
    lib = library()
    if lib is None:
        return f"native kernels unavailable: {_failed}"
    if not 1 <= n <= lib.fa_max_n():  # the kernels' stack buffers
        return f"native kernels hold n <= {lib.fa_max_n()} samples, got n = {n}"
    return None


def _check(name: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple, columns=False) -> None:
    """The kernels read raw memory: a tensor that is not what they expect is refused.
    ``columns``: laid out as :func:`column_layout` makes it (Z and A), else contiguous."""
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"native kernels: {name} must be a tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ConfigError(f"native kernels: {name} must be on the CPU, got {t.device}")
    if t.dtype != dtype:
        raise ConfigError(f"native kernels: {name} must be {dtype}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ConfigError(
            f"native kernels: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}"
        )
    if columns and not t.transpose(1, 2).is_contiguous():
        raise ConfigError(
            f"native kernels: {name} must be in column layout (strides (n p, 1, p), as "
            f"native.column_layout makes it), got strides {t.stride()}"
        )
    if not columns and not t.is_contiguous():
        raise ConfigError(f"native kernels: {name} must be contiguous (strides {t.stride()})")


def column_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` (k, p, n) with each member's columns contiguous (strides (n p, 1, p)), the
    layout the kernels read Z and A in: a block of hidden units is then a run of memory in
    every column, and the step vectorises along the units. The same tensor if it already
    is (its data is shared), else a copy."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _threads(elements: int) -> int:
    return torch.get_num_threads() if elements >= _MIN_PARALLEL else 1


class RowSpaceKernels:
    """The kernels for one activation, bound to one fit's G: (n, n) shared by the members
    or (K, n, n) one per member."""

    def __init__(self, G: torch.Tensor, activation: str | Activation):
        self.lib = library()
        if self.lib is None:
            raise ConfigError(f"native kernels unavailable: {_failed}")
        activation = get_activation(activation)
        if activation.native is None:
            raise ConfigError(
                f"native kernels: no kernels for activation {activation.name!r}; "
                f"accepted: {', '.join(with_native())}"
            )
        if G.dim() not in (2, 3) or G.shape[-1] != G.shape[-2]:
            raise ConfigError(
                f"native kernels: G must be (n, n) or (K, n, n), got {tuple(G.shape)}"
            )
        if G.dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"native kernels take float32 or float64, got {G.dtype}")
        if G.device.type != "cpu":
            raise ConfigError(f"native kernels: G must be on the CPU, got {G.device}")
        self.dtype = G.dtype
        self.n = G.shape[-1]
        if not 1 <= self.n <= self.lib.fa_max_n():
            raise ConfigError(
                f"native kernels hold n <= {self.lib.fa_max_n()} samples, got n = {self.n}"
            )
        self.shared = G.dim() == 2
        self.G = G.contiguous()
        self.g_stride = 0 if self.shared else self.n * self.n
        self.suf = _suffix(G.dtype)
        self._fwd = _entry(self.lib, "forward", activation, self.suf)
        self._upd = _entry(self.lib, "update", activation, self.suf)
        self._steps = _entry(self.lib, "steps", activation, self.suf)
        self._scratch: dict = {}  # buffers the kernels only write and read within a call

    def _u_buffers(self, Z: torch.Tensor):
        """(the kernels' per-unit slots of u, scratch kept for the next call of this
        shape; u itself, new: the caller keeps it)."""
        k, p, n = Z.shape
        units = self._scratch.get(("units", k, p))
        if units is None:
            units = torch.empty(k * self.lib.fa_units_per_member(p), n, dtype=Z.dtype)
            self._scratch[("units", k, p)] = units
        return units, torch.empty(k, n, dtype=Z.dtype)

    def _masks(self, masks, k: int) -> list:
        """The mask arguments: (keys, t, thr, scale) as
        :meth:`.dropout.Dropout.native_args` makes them, or nulls (None: no dropout)."""
        if masks is None:
            return [None, 0, None, None]
        keys, t, thr, scale = masks
        for name, v, dt in (("keys", keys, torch.int64), ("thr", thr, torch.int64),
                            ("scale", scale, self.dtype)):  # fmt: skip
            _check(name, v, dt, (k,))
        return [_ptr(keys), int(t), _ptr(thr), _ptr(scale)]

    def forward(self, Z: torch.Tensor, beta: torch.Tensor, masks=None) -> torch.Tensor:
        """beta^T psi(Z) per member, (k, n) (without the 1/sqrt p); with ``masks``
        (:meth:`.dropout.Dropout.native_args`), psi(Z) times this step's scaled masks."""
        if Z.dim() != 3 or Z.shape[-1] != self.n:
            raise ConfigError(f"native kernels: Z must be (k, p, {self.n}), got {tuple(Z.shape)}")
        k, p, n = Z.shape
        _check("Z", Z, self.dtype, (k, p, n), columns=True)
        _check("beta", beta, self.dtype, (k, p))
        m = self._masks(masks, k)
        units, u = self._u_buffers(Z)
        self._fwd(k, p, n, _ptr(Z), _ptr(beta), *m, _ptr(units), _ptr(u), _threads(Z.numel()))
        return u

    def _dims(self, Z) -> tuple[int, int, int]:
        """(k, p, n) of Z, which must be (k, p, n) with this G's n."""
        if not isinstance(Z, torch.Tensor) or Z.dim() != 3 or Z.shape[-1] != self.n:
            got = tuple(Z.shape) if isinstance(Z, torch.Tensor) else type(Z).__name__
            raise ConfigError(f"native kernels: Z must be (k, p, {self.n}), got {got}")
        return tuple(Z.shape)

    def _checked(self, dims, Z, A, members, **vectors):
        """(G, the vectors made contiguous) for a step on Z (and A) of members ``members``,
        every tensor checked: ``dims`` is (k, p, n) from :meth:`_dims`, ``vectors`` maps a
        name to (tensor or None, its shape)."""
        k, p, n = dims
        G = self.G if self.shared else self.G[members if members is not None else slice(None)]
        dt = self.dtype
        _check("G", G, dt, (n, n) if self.shared else (k, n, n))
        _check("Z", Z, dt, (k, p, n), columns=True)
        if A is not None:
            _check("A", A, dt, (k, p, n), columns=True)
        out = {}
        for name, (t, shape) in vectors.items():
            if t is not None:
                t = t.contiguous()
                _check(name, t, dt, shape)
            out[name] = t
        return G, out

    def update(self, Z, A, ce, fb_lr, keep, beta, lr, lam, members=None, masks=None):
        """One step in place: A <- keep A - M (A None: no A kept), Z <- keep Z - M G,
        beta <- beta - lr (psi(Z) ce + lam beta); returns the next step's beta^T psi(Z)
        (k, n), as :meth:`forward`. ``members`` (a slice) picks the members' G where
        each has its own. With ``masks`` (:meth:`.dropout.Dropout.native_args`), psi(Z)
        and psi'(Z) are times this step's scaled masks and the next output's psi(Z)
        times the next step's."""
        k, p, n = dims = self._dims(Z)
        G, v = self._checked(
            dims, Z, A, members, ce=(ce, (k, n)), fb_lr=(fb_lr, (k, p)), keep=(keep, (k,)),
            lr=(lr, (k,)), lam=(lam, (k,)),
        )  # fmt: skip
        _check("beta", beta, self.dtype, (k, p))  # updated in place: never a copy
        units, u = self._u_buffers(Z)
        self._upd(
            k, p, n, _ptr(Z), _ptr(A), _ptr(G), self.g_stride, _ptr(v["ce"]), _ptr(v["fb_lr"]),
            _ptr(v["keep"]), _ptr(beta), _ptr(v["lr"]), _ptr(v["lam"]), *self._masks(masks, k),
            _ptr(units), _ptr(u), _threads(Z.numel()),
        )  # fmt: skip
        return u

    def steps(
        self, count, Z, A, u, y, c_p, fb_lr, keep, beta, lr, lam, members=None, masks=None,
        fb_beta=None,
    ):  # fmt: skip
        """``count`` steps in one call, each the engine's: e = u / sqrt p - y from the raw
        output u (k, n) the last :meth:`update` or :meth:`forward` returned, then
        :meth:`update` with ce = e c_p (and ``masks``, whose t is the first step's, the
        next steps' following it). The members where ``fb_beta`` (bool, (k,)) is set
        (backprop) take fb_lr = beta lr afresh at each step, the others ``fb_lr``'s rows.
        The same roundings as the engine's torch ops, so the same numbers, without a call
        from Python a step. ``u`` is read, not changed. Returns (the raw output after the
        last step, (k, n); every step's e, (count, k, n))."""
        k, p, n = self._dims(Z)
        need(
            is_int(count) and 1 <= count <= _MAX_RUN,
            "steps count",
            count,
            f"an integer from 1 to {_MAX_RUN}",
        )
        count = int(count)
        check_memory(count * k * n * Z.element_size(), "the run's errors", "fewer steps a call")
        G, v = self._checked(
            (k, p, n), Z, A, members, u=(u, (k, n)), y=(y, (k, n)), fb_lr=(fb_lr, (k, p)),
            keep=(keep, (k,)), lr=(lr, (k,)), lam=(lam, (k,)),
        )  # fmt: skip
        _check("beta", beta, self.dtype, (k, p))
        if fb_beta is not None:
            fb_beta = fb_beta.contiguous()
            _check("fb_beta", fb_beta, torch.bool, (k,))
        units, u_out = self._u_buffers(Z)
        u_out.copy_(v["u"])
        e = torch.empty(count, k, n, dtype=self.dtype)
        self._steps(
            count, k, p, n, _ptr(Z), _ptr(A), _ptr(G), self.g_stride, _ptr(v["y"]),
            math.sqrt(p), c_p, _ptr(v["fb_lr"]), _ptr(v["keep"]), _ptr(beta), _ptr(v["lr"]),
            _ptr(v["lam"]), *self._masks(masks, k), _ptr(fb_beta), _ptr(e), _ptr(units),
            _ptr(u_out), _threads(Z.numel()),
        )  # fmt: skip
        return u_out, e


def _suffix(dtype: torch.dtype) -> str:
    """The kernels' name suffix for ``dtype`` (float32 or float64)."""
    return "f32" if dtype == torch.float32 else "f64"


def _whole_vectors(lib: ctypes.CDLL, count: int, dtype: torch.dtype) -> int:
    """``count`` rounded up to whole vectors of the library's width (the test entries
    work a vector at a time)."""
    lanes = lib.fa_vec_bytes() // torch.empty(0, dtype=dtype).element_size()
    return -(-count // lanes) * lanes


def evaluate(activation: str | Activation, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """psi and psi' of ``z`` as the native kernels compute them (for the tests)."""
    act = get_activation(activation)
    lib = library()
    flat = z.reshape(-1)
    padded = torch.zeros(_whole_vectors(lib, flat.numel(), z.dtype), dtype=z.dtype)
    padded[: flat.numel()] = flat
    psi, dpsi = torch.empty_like(padded), torch.empty_like(padded)
    fn = getattr(lib, f"fa_eval_{act.native}_{_suffix(z.dtype)}")
    fn(padded.numel(), _ptr(padded), _ptr(psi), _ptr(dpsi))
    m = flat.numel()
    return psi[:m].view_as(z), dpsi[:m].view_as(z)


def keep_scale(key: int, q_threshold: int, scale: float, p: int, j: int, dtype) -> torch.Tensor:
    """The factors (scale or 0) the kernels multiply units [0, p) of sample j by, for the
    step key ``key`` (for the tests: :mod:`..dropout` draws the same masks)."""
    lib = library()
    out = torch.empty(_whole_vectors(lib, p, dtype), dtype=dtype)
    fn = getattr(lib, f"fa_keep_scale_{_suffix(dtype)}")
    fn(key, q_threshold, scale, (p + 1) // 2, j, out.numel(), _ptr(out))
    return out[:p]
