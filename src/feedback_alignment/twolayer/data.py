"""The paper's synthetic tasks, seeded: a linear teacher and a same-width random teacher.

Each generator draws everything from one ``torch.Generator`` seeded with ``seed`` in
float64 on the CPU, so a seed gives the same numbers whatever dtype or device the run
uses afterwards. :func:`stack` draws one task per seed for an ensemble (the paper uses
fresh data for every repetition).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..activations import Activation, get_activation
from ..bounds import check_memory, within
from ..errors import check, choice, need

F64 = torch.float64


def _positive_int(name: str, value) -> int:
    need(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        name,
        value,
        "a positive integer",
    )
    return within(name, value, "size")


def _gen(seed: int) -> torch.Generator:
    need(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
        "seed",
        seed,
        "a non-negative integer",
    )
    return torch.Generator().manual_seed(within("seed", seed, "seed"))


def _fits(what: str, *shapes: tuple[int, ...]) -> None:
    """Refuse a task whose float64 tensors (X, the teacher, y) would not fit in memory."""
    check_memory(8 * sum(math.prod(s) for s in shapes), what, "smaller n, d or p")


def linear_teacher(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of X ~ N(0, I_d), theta ~ N(0, I_d), y = X theta (noiseless)."""
    n, d = _positive_int("n", n), _positive_int("d", d)
    _fits(f"linear_teacher(n={n}, d={d})", (n, d), (d,), (n,))
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    theta = torch.randn(d, generator=g, dtype=F64)
    return X, X @ theta


def random_teacher(
    n: int, d: int, p: int, activation: str | Activation = "relu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """X ~ N(0, I_d); y = (1/sqrt p) sum_r a_r psi(v_r . x) with V, a ~ N(0, 1) (noiseless).

    The paper's teacher has the same activation and width p as the student.
    """
    n, d, p = _positive_int("n", n), _positive_int("d", d), _positive_int("p", p)
    act = get_activation(activation)
    _fits(f"random_teacher(n={n}, d={d}, p={p})", (n, d), (p, d), (p,), (n, p), (n,))
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    V = torch.randn(p, d, generator=g, dtype=F64)
    a = torch.randn(p, generator=g, dtype=F64)
    return X, act(X @ V.T) @ a / math.sqrt(p)


TASKS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "linear": linear_teacher,
    "teacher": random_teacher,
}  # the data tasks by name: a sweep's ``task`` field accepts these keys


def task_data(
    task: str, n: int, d: int, p: int, activation: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data of task ``task`` (a key of :data:`TASKS`) for a network of width p and
    activation ``activation``: ``linear`` ignores both, ``teacher`` is of that width and
    activation."""
    choice("task", task, TASKS)
    if task == "linear":
        return linear_teacher(n, d, seed=seed)
    return random_teacher(n, d, p, activation=activation, seed=seed)


def stack(
    task: Callable[..., tuple[torch.Tensor, torch.Tensor]], seeds: Sequence[int], **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """One task per seed, stacked: X (K, n, d), y (K, n)."""
    check(len(seeds) >= 1, "seeds must hold at least one seed, got an empty sequence")
    pairs = [task(seed=int(s), **kwargs) for s in seeds]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
