"""The native (C++) row-space kernels (ReLU, tanh) against the torch ops they replace."""

import time
import warnings

import numpy as np
import pytest
import torch

from feedback_alignment.activations import get_activation
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer import dropout, native
from feedback_alignment.twolayer.data import random_teacher, stack
from feedback_alignment.twolayer.engine import METRICS, TwoLayerEnsemble
from feedback_alignment.twolayer.native import selfcheck
from feedback_alignment.twolayer.schedules import ExpDecay

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler here")

# big enough (K p n = 3 * 400 * 20 > 2^14) that the kernels run on every thread
N, D, P, SEEDS = 20, 60, 400, [0, 1, 2]


@pytest.fixture(autouse=True)
def _native_without_self_check(monkeypatch):
    """The kernels wherever they apply: which ones run must not depend on timing here
    (the self-check has its own tests below)."""
    monkeypatch.setenv("FA_NATIVE", "1")


def fit(
    kernels,
    dtype="float64",
    rule="fa",
    steps=300,
    threads=None,
    chunk=None,
    lr=None,
    act="relu",
    shared=True,
    **kw,
):
    if shared:
        X, y = random_teacher(N, D, P, act, seed=1)
    else:  # one data set per member, as the paper's E1 draws them
        X, y = stack(random_teacher, [1, 2, 3], n=N, d=D, p=P, activation=act)
    to = getattr(torch, dtype)
    ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation=act, dtype=dtype)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        h = ens.fit(
            X.to(to),
            y.to(to),
            rule=rule,
            lr=lr or [0.02, 0.05, 0.01],
            lam=[0.0, 0.2, 0.05],
            steps=steps,
            record_every=50,
            kernels=kernels,
            chunk_members=chunk,
            **{"metrics": METRICS, **kw},
        )
    finally:
        torch.set_num_threads(before)
    return ens, h


@pytest.mark.parametrize("shared", [True, False], ids=["shared-X", "X-per-member"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("rule", ["fa", "bp", ["fa", "bp", "fa"]], ids=["fa", "bp", "mixed"])
@pytest.mark.parametrize("w_decay", [0.0, 0.01])
def test_native_equals_torch_ops(act, rule, w_decay, shared):
    kw = dict(act=act, rule=rule, w_decay=w_decay, lam_schedule=ExpDecay(0.999), shared=shared)
    e0, h0 = fit("torch", **kw)
    e1, h1 = fit("auto", **kw)
    assert (h0.kernels, h1.kernels) == ("torch", "native") and h1.path == "rowspace"
    for m, v in h0.metrics.items():
        np.testing.assert_allclose(h1.metrics[m], v, rtol=1e-12, atol=1e-15, err_msg=m)
    assert float((e1.W - e0.W).norm() / e0.W.norm()) < 1e-12
    assert float((e1.beta - e0.beta).norm() / e0.beta.norm()) < 1e-12


def _plain_step(act, Z, A, G, ce, fb_lr, keep, beta, lr, lam, S=None, S_next=None):
    """The kernels' step written out in float64 torch ops (rowspace.cpp's header), with
    the activation's own psi and psi' (activations.py); S, S_next: this step's and the
    next step's scaled dropout masks (k, p, n), or None."""
    f = get_activation(act)
    Z, A, G, ce, fb_lr, keep, beta, lr, lam = (
        t.double() for t in (Z, A, G, ce, fb_lr, keep, beta, lr, lam)
    )
    S = torch.ones_like(Z) if S is None else S.double()
    S_next = torch.ones_like(Z) if S_next is None else S_next.double()
    psi, dpsi = f(Z) * S, f.deriv(Z) * S
    M = fb_lr[:, :, None] * dpsi * ce[:, None, :]
    d = (psi * ce[:, None, :]).sum(-1)
    Z = keep[:, None, None] * Z - M @ G
    A = keep[:, None, None] * A - M
    beta = beta - lr[:, None] * (d + lam[:, None] * beta)
    return Z, A, beta, (beta[:, :, None] * f(Z) * S_next).sum(1)


def _masks(g, k, p, n, dtype):
    """Random member keys, a random step t and probabilities (one member at q = 0): the
    kernels' mask arguments, and the scaled masks of step t and t + 1 from
    dropout.step_key and dropout.keep_bits."""
    keys = [dropout.mix64(int(v)) for v in torch.randint(0, 2**62, (k,), generator=g)]
    t = int(torch.randint(0, 10**6, (1,), generator=g))
    qs = [0.0, 0.3, 0.7][:k]

    def scaled(key, q):
        keep = torch.from_numpy(dropout.keep_bits(key, p, n) >= dropout.threshold(q)).double()
        return keep * torch.tensor(1 / (1 - q), dtype=torch.float64).to(dtype).double()

    S = torch.stack([scaled(dropout.step_key(keys[i], t), qs[i]) for i in range(k)])
    S_next = torch.stack([scaled(dropout.step_key(keys[i], t + 1), qs[i]) for i in range(k)])

    def bits(values):
        return torch.from_numpy(np.array(values, dtype=np.uint64).view(np.int64))

    scale = torch.tensor([1 / (1 - q) for q in qs], dtype=torch.float64).to(dtype)
    args = (bits(keys), t, bits([dropout.threshold(q) for q in qs]), scale)
    return args, S, S_next


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", ["linear", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("n", [7, 13])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-G", "G-per-member"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-dropout", "dropout"])
def test_the_update_is_the_plain_step_at_every_block_shape(dtype, act, n, shared, masked):
    """Widths that leave every size of short last block (a block is kPanel vectors of
    units: 4 with AVX-512, 64 float32 or 32 float64 units; 2 with AVX2, 16 or 8), below
    one vector, across the 256-unit work units; n with a rest of columns after the
    6-column register blocks; with dropout, the masks the kernels draw against
    dropout.keep_bits (this step's for the update, the next step's for the output)."""
    g = torch.Generator().manual_seed(n)
    for p in (1, 3, 8, 9, 15, 16, 17, 24, 31, 33, 40, 47, 63, 65, 100, 255, 257, 300):
        k = 3

        def r(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

        X = r(*((n, 2 * n) if shared else (k, n, 2 * n)))
        G = X @ X.transpose(-1, -2) / (2 * n)
        kern = native.RowSpaceKernels(G, act)
        Z, A = native.column_layout(r(k, p, n)), native.column_layout(r(k, p, n))
        ce, fb_lr, beta = r(k, n, scale=0.3), r(k, p, scale=0.1), r(k, p)
        keep, lr, lam = 1 - r(k).abs() * 0.01, r(k).abs() * 0.1, r(k).abs()
        args, S, S_next = _masks(g, k, p, n, dtype) if masked else (None, None, None)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        if masked:  # this step's output, from the same masks
            u0 = kern.forward(Z, beta, args)
            ref = (beta.double()[:, :, None] * get_activation(act)(Z.double()) * S).sum(1)
            assert float((u0.double() - ref).abs().max()) <= tol * (float(ref.abs().max()) + 1)
        want = _plain_step(act, Z, A, G, ce, fb_lr, keep, beta, lr, lam, S, S_next)
        u = kern.update(Z, A, ce, fb_lr, keep, beta, lr, lam, masks=args)
        for name, got, ref in zip(("Z", "A", "beta", "u"), (Z, A, beta, u), want, strict=True):
            scale = float(ref.abs().max()) + 1.0
            assert float((got.double() - ref).abs().max()) <= tol * scale, (name, p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernels_draw_the_masks_of_dropout_keep_bits(dtype):
    """native.keep_scale (the kernels' keep_scale, one vector at a time) against
    dropout.keep_bits (numpy) at odd and even widths, every sample, several q."""
    for p, n in ((1, 3), (37, 5), (64, 2), (301, 4)):
        for q in (0.0, 0.25, 0.9):
            key = dropout.step_key(dropout.member_key(p * 7 + n), 11)
            thr = dropout.threshold(q)
            scale = float(torch.tensor(1 / (1 - q), dtype=torch.float64).to(dtype))
            want = torch.from_numpy(dropout.keep_bits(key, p, n) >= thr).to(dtype) * scale
            for j in range(n):
                got = native.keep_scale(key, thr, scale, p, j, dtype)
                assert torch.equal(got, want[:, j]), (p, q, j)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_tanh_is_tanh_to_a_few_ulp(dtype):
    z = torch.cat(
        [
            torch.linspace(-25, 25, 100001, dtype=dtype),
            torch.randn(10000, dtype=dtype) * 1e-3,
            torch.tensor([0.0, 1e-30, -1e-30, float("inf"), -float("inf")], dtype=dtype),
        ]
    )
    t, d = native.evaluate("tanh", z)
    ref = torch.tanh(z)
    eps = torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny
    assert float(((t - ref).abs() / ref.abs().clamp_min(tiny)).max()) <= 3 * eps
    assert float((d - (1 - ref * ref)).abs().max()) <= 3 * eps
    assert t[-2:].tolist() == [1.0, -1.0] and d[-2:].tolist() == [0.0, 0.0]
    nan = native.evaluate("tanh", torch.tensor([float("nan")] * 3, dtype=dtype))
    assert torch.isnan(nan[0]).all()


def _within_ulps(got, want, ulps, z):
    """Every value of ``got`` within ``ulps`` units in the last place of ``want`` (the
    float's bits as integers; the z where the most is reached named on failure)."""
    bits = torch.int32 if got.dtype == torch.float32 else torch.int64
    diff = (got.view(bits).long() - want.view(bits).long()).abs()
    assert int(diff.max()) <= ulps, float(z[diff.argmax()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_tanh_at_the_saturating_ends_and_near_zero(dtype):
    """Where tanh rounds to +-1 (and psi' to a few ulp or 0) and where it is z to the
    last bit: every value within 3 ulp of torch.tanh, psi' within 2 eps of 1 - tanh^2,
    odd to the bit."""
    ends = torch.linspace(4.0, 40.0, 200001, dtype=torch.float64)
    small = torch.logspace(-40, -1, 20001, dtype=torch.float64)
    z = torch.cat([ends, small]).to(dtype)
    z = torch.cat([z, -z])
    t, d = native.evaluate("tanh", z)
    ref = torch.tanh(z)
    _within_ulps(t, ref, 3, z)
    eps = torch.finfo(dtype).eps
    assert float((d - (1 - ref * ref)).abs().max()) <= 2 * eps
    half = z.numel() // 2
    assert torch.equal(t[:half], -t[half:]) and torch.equal(d[:half], d[half:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_sigmoid_is_sigmoid_to_a_few_ulp(dtype):
    """Across the range where e^|z| is finite (|z| <= 88 in float32, 709 in float64) and
    near 0: within 3 ulp of torch.sigmoid; psi' = psi (1 - psi) as activations.py forms it
    from torch's; past that range psi is 1 or below 1e-38 (1e-307), as torch's is."""
    top = 88.0 if dtype == torch.float32 else 709.0
    z = torch.cat([torch.linspace(-top, top, 200001, dtype=torch.float64),
                   torch.logspace(-40, -1, 20001, dtype=torch.float64)]).to(dtype)  # fmt: skip
    z = torch.cat([z, -z])
    s, d = native.evaluate("sigmoid", z)
    ref = torch.sigmoid(z)
    _within_ulps(s, ref, 3, z)
    eps = torch.finfo(dtype).eps
    assert float((d - ref * (1 - ref)).abs().max()) <= 4 * eps
    far = torch.tensor([-1e4, -2 * top, 2 * top, 1e4, float("inf"), -float("inf")], dtype=dtype)
    s, d = native.evaluate("sigmoid", far)
    small = 1e-38 if dtype == torch.float32 else 1e-307
    assert float(s[:2].max()) < small and s[2:5].tolist() == [1.0, 1.0, 1.0]
    assert float(s[5]) < small and float(d.abs().max()) < small
    nan = torch.tensor([float("nan")] * 3, dtype=dtype)
    assert torch.isnan(native.evaluate("sigmoid", nan)[0]).all()


@pytest.mark.parametrize("width", [16, 32, 64])
def test_every_width_compiles(tmp_path, width):
    """The 16-, 32- and 64-byte kernels compile for the instruction sets they are written
    for (SSE, AVX2 + FMA, AVX-512), whether or not this CPU can run them."""
    import shutil
    import subprocess

    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    isa = {16: ["-msse2"], 32: ["-mavx2", "-mfma"], 64: ["-mavx512f", "-mavx512dq"]}[width]
    res = subprocess.run(
        [
            cxx,
            "-O1",
            "-std=c++17",
            "-fopenmp",
            *isa,
            f"-DFA_VEC_BYTES={width}",
            "-c",
            "-o",
            str(tmp_path / "k.o"),
            str(native._SOURCE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-X", "X-per-member"])
def test_numbers_do_not_depend_on_threads_or_chunks(shared):
    ref = fit("auto", dtype="float32", threads=2, shared=shared)
    for threads, chunk in [(1, None), (2, 1), (1, 2)]:
        got = fit("auto", dtype="float32", threads=threads, chunk=chunk, shared=shared)
        assert got[1].kernels == "native"
        for m, v in ref[1].metrics.items():
            np.testing.assert_array_equal(got[1].metrics[m], v, err_msg=f"{m} {threads} {chunk}")
        assert torch.equal(got[0].W, ref[0].W) and torch.equal(got[0].beta, ref[0].beta)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_float32_close_to_float64(act):
    e32, h32 = fit("auto", dtype="float32", act=act)
    e64, h64 = fit("auto", act=act)
    assert h32.kernels == "native"
    for m in ("mse", "alignment", "w_change", "beta_change", "update_alignment"):
        np.testing.assert_allclose(h32.metrics[m], h64.metrics[m], rtol=2e-3, atol=1e-6)


def test_a_diverging_member_leaves_the_others_untouched():
    """A member whose Z turns inf/NaN must not reach the others' sums (shared buffers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e_bad, h_bad = fit("auto", lr=[0.02, 80.0, 0.01], steps=100)
    e_ok, h_ok = fit("auto", lr=[0.02, 0.05, 0.01], steps=100)
    assert h_bad.diverged == [1] and h_bad.kernels == "native"
    for k in (0, 2):
        np.testing.assert_array_equal(h_bad.metrics["mse"][:, k], h_ok.metrics["mse"][:, k])
        assert torch.equal(e_bad.beta[k], e_ok.beta[k])


def test_relu_nan_propagates_like_torch():
    """relu(NaN) is NaN in the native forward too, so a NaN pre-activation shows in u."""
    kern = native.RowSpaceKernels(torch.eye(3, dtype=torch.float64), "relu")
    Z = native.column_layout(torch.zeros(1, 4, 3, dtype=torch.float64))
    Z[0, 2, 1] = float("nan")
    u = kern.forward(Z, torch.ones(1, 4, dtype=torch.float64))
    assert torch.isnan(u[0, 1]) and u[0, 0] == 0 and u[0, 2] == 0


def test_where_it_does_not_apply_the_torch_ops_run(monkeypatch):
    X, y = random_teacher(8, 20, 30, "tanh", seed=0)
    erf = TwoLayerEnsemble(20, 30, activation="erf").fit(X, y, steps=2)
    assert erf.kernels == "torch"
    assert TwoLayerEnsemble(20, 30, activation="tanh").fit(X, y, steps=2).kernels == "native"
    relu = TwoLayerEnsemble(20, 30, activation="relu")
    assert relu.fit(X, y, steps=2).kernels == "native"
    h = relu.fit(X, y, steps=2, kernels="torch")
    assert h.kernels == "torch" and "kernels='torch'" in h.kernels_why
    per_member = torch.stack([X, X])
    two = TwoLayerEnsemble(20, 30, seeds=[0, 1], activation="relu")
    h = two.fit(per_member, torch.stack([y, y]), steps=2)
    assert h.kernels == "native" and h.kernels_why == ""
    assert "erf" in erf.kernels_why
    monkeypatch.setenv("FA_NATIVE", "0")
    h = relu.fit(X, y, steps=2)
    assert h.kernels == "torch" and h.kernels_why == "FA_NATIVE=0"
    assert relu.fit(X, y, steps=2, kernels="native").kernels == "native"  # "auto" only
    monkeypatch.setenv("FA_NATIVE", "yes")
    with pytest.raises(
        ConfigError, match='FA_NATIVE = "yes" is not accepted; accepted: 0, 1 or auto'
    ):
        relu.fit(X, y, steps=2)


@pytest.mark.parametrize(
    "act, path, X, why",
    [
        ("erf", "rowspace", None, "no native kernels for activation 'erf'"),
        ("relu", "explicit", None, "only on the row-space path, this fit runs path 'explicit'"),
        ("relu", "rowspace", torch.zeros(1030, 20), "n <= 1024 samples, got n = 1030"),
    ],
)
def test_native_asked_for_where_it_cannot_run_is_refused(act, path, X, why):
    X, y = (X, torch.zeros(len(X))) if X is not None else random_teacher(8, 20, 30, act, seed=0)
    ens = TwoLayerEnsemble(20, 30, activation=act)
    with pytest.raises(ConfigError, match=f"kernels='native' cannot run this fit: .*{why}"):
        ens.fit(X, y, steps=2, path=path, kernels="native")
    assert ens.t == 0 and ens._path is None  # refused before anything ran


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: must build
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    X, y = random_teacher(8, 20, 30, "relu", seed=0)
    ens = TwoLayerEnsemble(20, 30, activation="relu")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h1 = ens.fit(X, y, steps=3)
        h2 = ens.fit(X, y, steps=3)
    assert h1.kernels == h2.kernels == "torch"
    msgs = [str(x.message) for x in w if "native row-space kernels unavailable" in str(x.message)]
    assert len(msgs) == 1 and "no-such-compiler" in msgs[0]


# ---------------------------------------------------------------- vector width, build
@pytest.mark.parametrize(
    "flags, width",
    [
        ({"sse2", "avx2", "fma", "avx512f"}, 64),
        ({"sse2", "avx", "avx2", "fma"}, 32),
        ({"sse2", "avx"}, 16),
        ({"fp", "asimd"}, 16),
        ({"fpu"}, None),
    ],
)
def test_vector_width_from_the_cpu_flags(monkeypatch, flags, width):
    monkeypatch.delenv("FA_NATIVE_VEC_BYTES", raising=False)
    monkeypatch.setattr(native, "_cpu_flags", lambda: flags)
    assert native.vector_bytes()[0] == width


def test_vector_width_forced_and_refused(monkeypatch):
    monkeypatch.setenv("FA_NATIVE_VEC_BYTES", "32")
    assert native.vector_bytes() == (32, "FA_NATIVE_VEC_BYTES")
    monkeypatch.setenv("FA_NATIVE_VEC_BYTES", "48")
    with pytest.raises(
        ConfigError, match='FA_NATIVE_VEC_BYTES = "48" is not accepted; accepted: 16, 32 or 64'
    ):
        native.vector_bytes()


def test_the_cache_key_holds_the_compiler_and_its_version():
    key = native._cache_key("c++", "c++ (GCC) 12.2.0", ["-O3"], None)
    assert key == native._cache_key("c++", "c++ (GCC) 12.2.0", ["-O3"], None)
    assert key != native._cache_key("c++", "c++ (GCC) 13.1.0", ["-O3"], None)
    assert key != native._cache_key("clang++", "c++ (GCC) 12.2.0", ["-O3"], None)
    assert key != native._cache_key("c++", "c++ (GCC) 12.2.0", ["-O2"], None)


def test_this_build_has_the_cpu_width():
    width, origin = native.vector_bytes()
    assert native.library().fa_vec_bytes() == width, origin
    # the register block the docs give: 4 vectors of units with AVX-512's 32 registers,
    # 2 with the 16 of AVX2, SSE and NEON
    assert native.library().fa_panel() == (4 if width == 64 else 2)


def _fresh_build(monkeypatch, tmp_path, **env):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: must build
    for k, v in env.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parametrize("width", ["16"])
def test_another_width_builds_apart_and_gives_the_same_numbers(monkeypatch, tmp_path, width):
    """A forced width is its own build (its own cache file) and exact like the CPU's."""
    _, ref = fit("torch", shared=False, act="tanh", steps=100)
    _fresh_build(monkeypatch, tmp_path, FA_NATIVE_VEC_BYTES=width)
    assert native.library().fa_vec_bytes() == int(width)
    built = list((tmp_path / "feedback-alignment" / "native").glob("rowspace-*.so"))
    assert [f.name.split("-")[1] for f in built] == [f"{int(width) * 8}bit"]
    _, got = fit("auto", shared=False, act="tanh", steps=100)
    assert got.kernels == "native"
    for m, v in ref.metrics.items():
        np.testing.assert_allclose(got.metrics[m], v, rtol=1e-12, atol=1e-15, err_msg=m)


def test_a_build_past_its_timeout_falls_back(monkeypatch, tmp_path):
    _fresh_build(monkeypatch, tmp_path, FA_NATIVE_BUILD_TIMEOUT="0.001")
    X, y = random_teacher(8, 20, 30, "relu", seed=0)
    with pytest.warns(RuntimeWarning, match="took over 0.001 s"):
        h = TwoLayerEnsemble(20, 30, activation="relu").fit(X, y, steps=2)
    assert h.kernels == "torch" and "took over 0.001 s" in h.kernels_why


# ---------------------------------------------------------------- kernel boundary
def test_the_kernels_refuse_what_they_cannot_read():
    G = torch.eye(3, dtype=torch.float64)
    kern = native.RowSpaceKernels(G, "relu")
    Z = native.column_layout(torch.zeros(2, 4, 3, dtype=torch.float64))
    beta = torch.ones(2, 4, dtype=torch.float64)
    kern.forward(Z, beta)  # the right thing runs
    with pytest.raises(ConfigError, match=r"Z must be in column layout .* strides \(12, 3, 1\)"):
        kern.forward(torch.zeros(2, 4, 3, dtype=torch.float64), beta)
    with pytest.raises(ConfigError, match="beta must be contiguous"):
        kern.forward(Z, torch.ones(4, 2, dtype=torch.float64).T)
    with pytest.raises(ConfigError, match="Z must be torch.float64, got torch.float32"):
        kern.forward(Z.float(), beta)
    with pytest.raises(ConfigError, match=r"beta must have shape \(2, 4\), got \(2, 5\)"):
        kern.forward(Z, torch.ones(2, 5, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"Z must be \(k, p, 3\)"):
        kern.forward(torch.zeros(2, 4, 5, dtype=torch.float64), beta)
    ce, lr = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="lam must be torch.float64"):
        kern.update(Z, None, ce, beta, None, beta, lr, lr.float())
    with pytest.raises(ConfigError, match="no kernels for activation 'erf'"):
        native.RowSpaceKernels(G, "erf")
    with pytest.raises(ConfigError, match="n <= 1024 samples, got n = 1025"):
        native.RowSpaceKernels(torch.eye(1025), "relu")
    with pytest.raises(ConfigError, match="float32 or float64, got torch.float16"):
        native.RowSpaceKernels(G.half(), "relu")
    i64 = torch.zeros(2, dtype=torch.int64)
    kern.forward(Z, beta, (i64, 0, i64, torch.ones(2, dtype=torch.float64)))  # masks
    with pytest.raises(ConfigError, match=r"keys must have shape \(2,\), got \(3,\)"):
        kern.forward(Z, beta, (torch.zeros(3, dtype=torch.int64), 0, i64, beta[:, 0]))
    with pytest.raises(ConfigError, match="scale must be torch.float64, got torch.float32"):
        kern.forward(Z, beta, (i64, 0, i64, torch.ones(2)))


# ---------------------------------------------------------------- self-check
@pytest.fixture
def selfcheck_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FA_NATIVE", "auto")
    monkeypatch.setattr(selfcheck, "_memo", {})
    return tmp_path


@pytest.mark.parametrize("faster", ["native", "torch"])
def test_the_self_check_picks_the_faster_and_remembers(selfcheck_cache, monkeypatch, faster):
    calls = []

    def fake_measure(*args):
        calls.append(args)
        fast, slow = 0.001, 0.003
        return {
            "native_s": fast if faster == "native" else slow,
            "torch_s": slow if faster == "native" else fast,
            "members": 3,
        }

    monkeypatch.setattr(selfcheck, "measure", fake_measure)
    X, y = random_teacher(N, D, P, "relu", seed=1)
    h1 = TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu").fit(X, y, steps=3)
    assert h1.kernels == faster
    if faster == "torch":
        assert h1.kernels_why.startswith("self-check: native 3 ms a step against torch ops 1 ms")
    else:
        assert h1.kernels_why == ""
    # the same shape class again, in this process and in a fresh one (the file): no timing
    TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu").fit(X, y, steps=3)
    monkeypatch.setattr(selfcheck, "_memo", {})
    h2 = TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu").fit(X, y, steps=3)
    assert len(calls) == 1 and h2.kernels == faster
    assert selfcheck.cache_file().is_relative_to(selfcheck_cache)
    # another shape class (float32) is checked on its own
    TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu", dtype="float32").fit(X, y, steps=3)
    assert len(calls) == 2
    # forcing skips the check
    monkeypatch.setenv("FA_NATIVE", "1")
    assert (
        TwoLayerEnsemble(D, P, seeds=SEEDS, dtype="float32", activation="tanh")
        .fit(X, y, steps=3)
        .kernels
        == "native"
    )
    assert len(calls) == 2


def test_the_self_check_is_cheap_and_times_both(selfcheck_cache):
    t0 = time.perf_counter()
    r = selfcheck.measure("tanh", torch.float32, False, 50, 3200, 50)
    took = time.perf_counter() - t0
    assert r["native_s"] > 0 and r["torch_s"] > 0
    assert r["members"] * 3200 * 50 <= selfcheck.CHECK_ELEMENTS
    # a bound generous enough for a shared, loaded test machine
    assert took < 10, took


# ---------------------------------------------------------------- keep_weights=False
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-X", "X-per-member"])
def test_without_weights_the_native_run_is_the_same(act, shared):
    metrics = ("mse", "alignment", "delta_alignment", "beta_change", "update_alignment")
    kw = dict(act=act, shared=shared, metrics=metrics, w_decay=0.01)
    e_ref, ref = fit("torch", **kw)
    e_got, got = fit("auto", keep_weights=False, **kw)
    assert got.kernels == "native"
    for m, v in ref.metrics.items():
        np.testing.assert_allclose(got.metrics[m], v, rtol=1e-12, atol=1e-15, err_msg=m)
    assert float((e_got.beta - e_ref.beta).norm() / e_ref.beta.norm()) < 1e-12
    with pytest.raises(ConfigError, match="keep_weights=False keeps only Z"):
        e_got.W  # noqa: B018


def test_a_failing_self_check_means_torch_ops(selfcheck_cache, monkeypatch):
    def broken(*args):
        raise RuntimeError("timer broke")

    monkeypatch.setattr(selfcheck, "measure", broken)
    X, y = random_teacher(N, D, P, "tanh", seed=1)
    h = TwoLayerEnsemble(D, P, seeds=SEEDS, activation="tanh").fit(X, y, steps=3)
    assert h.kernels == "torch" and "self-check failed (RuntimeError: timer broke)" in h.kernels_why
