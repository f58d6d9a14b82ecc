"""Mini-batch training for classification with any rule, plus the config-driven entry.

:class:`Trainer` runs SGD or Adam with a learning-rate schedule over an in-memory
:class:`~.data.Dataset`, evaluates every ``eval_every`` steps, records alignment metrics
on the training batch (``record_every``: the cheap ones, every step if you like;
``measure_every``: all of them, with an extra backprop pass), runs the weight-mirror phase
for ``wm`` layers, writes checkpoints, shows a progress bar and reports divergence with
the step and a likely cause. :func:`run_from_config` is the pure, seeded entry point for
sweeps: config dict in, plain metric series out.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..backend import resolve_device, resolve_dtype
from ..errors import ConfigError, DivergenceError, check, need
from ..fields import BLOWUP
from ..outputs import atomic_path, check_output_dir, previous_output, sha256, write_manifest
from .config import build, parse_config, trainer_settings
from .convert import mirror, rule_layers
from .data import Dataset
from .metrics import ErrorRecorder, alignment, weight_alignment

# a checkpoint directory holds the trainer's checkpoints and this manifest of their SHA-256,
# so a later run can prove which files are its own (and never overwrites anyone else's)
CHECKPOINT_MANIFEST = ".fa-checkpoints.json"
CHECKPOINT_TOOL = "fa train"


def check_checkpoint_dir(path, inputs=()) -> dict[str, str]:
    """Refuse a ``train.checkpoint_dir`` that is not new, empty or this trainer's own (every
    file proven by the manifest's SHA-256), or is a symlink, a file or the config itself;
    before any work. Returns the proven checkpoints."""
    what = "train.checkpoint_dir"
    check_output_dir(path, inputs=inputs, what=what)
    return previous_output(path, CHECKPOINT_MANIFEST, CHECKPOINT_TOOL, what=what)


def _lr_factor(schedule, gamma, milestones, warmup, total):
    def factor(step: int) -> float:
        f = 1.0
        if schedule == "step":
            f = gamma ** sum(step >= m for m in milestones)
        elif schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))
        elif schedule == "exponential":
            f = gamma ** (step / max(1, total))
        if warmup and step < warmup:
            f *= (step + 1) / warmup
        return f

    return factor


def _decay_groups(model: nn.Module, weight_decay) -> list[dict]:
    """Parameter groups: a float decays everything; a dict maps layer names (or ``last``,
    the last layer with a weight, and ``default``, everything else) to lambda."""
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool):
        need(weight_decay >= 0, "weight_decay", weight_decay, "a number >= 0")
        return [{"params": params, "weight_decay": float(weight_decay)}]
    need(
        isinstance(weight_decay, dict),
        "weight_decay",
        weight_decay,
        "a number or a table",
    )
    mods = dict(model.named_modules())
    with_weight = [
        n for n, m in mods.items() if n and isinstance(getattr(m, "weight", None), torch.Tensor)
    ]
    groups, used = [], set()
    default = 0.0
    for name, lam in weight_decay.items():
        need(
            isinstance(lam, (int, float)) and not isinstance(lam, bool) and lam >= 0,
            f"weight_decay[{name!r}]",
            lam,
            "a number >= 0",
        )
        if name == "default":
            default = float(lam)
            continue
        key = with_weight[-1] if name == "last" and with_weight else name
        if key not in mods or key == "":
            raise ConfigError(
                f"weight_decay names layer {name!r}, which the model lacks; layers: "
                f"{', '.join(with_weight)} (or 'last', 'default')"
            )
        ps = [p for p in mods[key].parameters() if p.requires_grad and id(p) not in used]
        used.update(id(p) for p in ps)
        groups.append({"params": ps, "weight_decay": float(lam)})
    rest = [p for p in params if id(p) not in used]
    if rest:
        groups.append({"params": rest, "weight_decay": default})
    return groups


class Trainer:
    """Train ``model`` on ``data`` (a :class:`~.data.Dataset`) with cross-entropy.

    Settings are keywords, declared once with their defaults, accepted values and
    meaning in :data:`~.config.FIELDS` (:func:`~.config.trainer_settings` lists them):
    every ``[train]`` key of an ``fa train`` config, plus ``record_every``,
    ``record_layers`` and ``measure_every`` (``[metrics]``), ``seed``, ``device``,
    ``dtype`` and ``normalize`` (``data.normalize``). ``callbacks``: functions
    ``f(trainer, row)`` called after every step with the step's row (step, loss,
    batch_accuracy, lr, and the metrics recorded at that step); ``trainer.batch`` holds
    the step's (x, y). ``blowup``: the loss growth against the first step's loss that
    counts as divergence.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        *,
        callbacks=(),
        blowup: float = BLOWUP.default,
        **settings,
    ):
        s = trainer_settings(**settings)
        self.blowup, self.loss0 = BLOWUP.validate(blowup), None
        check(isinstance(data, Dataset), f"data must be a Dataset; got {type(data).__name__}")
        steps, epochs, batch_size = s["steps"], s["epochs"], s["batch_size"]
        normalize = s["normalize"]
        self.device = resolve_device(s["device"])
        self.dtype = resolve_dtype(s["dtype"])
        self.data = data
        per_epoch = math.ceil(len(data.y_train) / batch_size)
        if steps is None:
            check(
                epochs is not None and epochs > 0,
                f"give steps or epochs > 0; got epochs={epochs!r}",
            )
            steps = max(1, int(round(epochs * per_epoch)))
        need(isinstance(steps, int) and steps >= 1, "steps", steps, "an int >= 1")
        self.steps, self.per_epoch, self.batch_size = steps, per_epoch, batch_size
        if normalize is True:
            self.mean, self.std = data.mean, data.std
        elif normalize is False:
            self.mean, self.std = 0.0, 1.0
        else:
            need(
                len(normalize) == 2 and normalize[1] > 0,
                "normalize",
                normalize,
                "true, false or [mean, std > 0]",
            )
            self.mean, self.std = float(normalize[0]), float(normalize[1])
        self.model = model.to(self.device, self.dtype)
        self.rule = next((m.rule.name for _, m in rule_layers(model)), "bp (plain autograd)")
        groups = _decay_groups(self.model, s["weight_decay"])
        self._named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._params = [p for _, p in self._named]
        lr, optimizer = s["lr"], s["optimizer"]
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                groups, lr=lr, momentum=s["momentum"], nesterov=s["nesterov"]
            )
        elif optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=lr, betas=s["betas"])
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=s["betas"])
        factor = _lr_factor(s["schedule"], s["gamma"], s["milestones"], s["warmup_steps"], steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.eval_every, self.eval_batch = s["eval_every"], s["eval_batch"]
        self.record_every, self.measure_every = s["record_every"], s["measure_every"]
        self.mirror_every = s["mirror_every"]
        names = [n for n, _ in rule_layers(model)]
        record_layers = s["record_layers"]
        if record_layers is not None:
            for n in record_layers:
                check(n in names, f"record_layers names {n!r}; rule layers: {', '.join(names)}")
        self.record_layers = None if record_layers is None else list(record_layers)
        self.checkpoint_dir = Path(s["checkpoint_dir"]) if s["checkpoint_dir"] else None
        if self.checkpoint_dir is not None:  # before any step: nothing of anyone's is lost
            self._checkpoints = check_checkpoint_dir(self.checkpoint_dir)
        self.checkpoint_every = s["checkpoint_every"]
        self.progress = s["progress"]
        self.callbacks = list(callbacks)
        self.shuffle = torch.Generator().manual_seed(s["seed"] * 7 + 1)
        self.noise = torch.Generator().manual_seed(s["seed"] * 7 + 2)
        self.step = 0
        self.perm = None
        self.position = 0
        self.batch = None
        self.history: dict[str, list] = {
            k: []
            for k in (
                "step",
                "loss",
                "batch_accuracy",
                "lr",
                "eval_step",
                "test_accuracy",
                "test_loss",
                "record_step",
                "measure_step",
            )
        }
        self.has_mirror = any(m.rule.mirror_phase for _, m in rule_layers(model))

    # -- data ---------------------------------------------------------------------------
    def _prepare(self, x):
        return ((x.to(self.device, self.dtype) / self.data.pixel_max) - self.mean) / self.std

    def _next_batch(self):
        n = len(self.data.y_train)
        if self.perm is None or self.position >= n:
            self.perm = torch.randperm(n, generator=self.shuffle)
            self.position = 0
        idx = self.perm[self.position : self.position + self.batch_size]
        self.position += len(idx)
        return self._prepare(self.data.x_train[idx]), self.data.y_train[idx].to(self.device)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) on the test split."""
        was = self.model.training
        self.model.eval()
        correct, total_loss, n = 0, 0.0, len(self.data.y_test)
        for i in range(0, n, self.eval_batch):
            x = self._prepare(self.data.x_test[i : i + self.eval_batch])
            y = self.data.y_test[i : i + self.eval_batch].to(self.device)
            out = self.model(x)
            total_loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
        self.model.train(was)
        return correct / max(1, n), total_loss / max(1, n)

    def _log_eval(self):
        acc, loss = self.evaluate()
        h = self.history
        h["eval_step"].append(self.step)
        h["test_accuracy"].append(acc)
        h["test_loss"].append(loss)
        return acc

    def _put(self, key: str, value: float, index_key: str):
        series = self.history.setdefault(key, [])
        # keep series aligned with their step index even if a layer was missing earlier
        while len(series) < len(self.history[index_key]) - 1:
            series.append(float("nan"))
        series.append(value)

    # -- training -------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimiser step on the next batch; returns the step's row."""
        x, y = self._next_batch()
        self.batch = (x, y)
        step = self.step + 1
        record = self.record_every and step % self.record_every == 0
        measure = self.measure_every and step % self.measure_every == 0
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        rec_ctx = (
            ErrorRecorder(self.model, self.record_layers) if record else contextlib.nullcontext()
        )
        with rec_ctx as rec:
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DivergenceError(
                    f"training diverged at step {step}: the loss is {value}; likely cause: "
                    f"learning rate {lr:g} too large for rule {self.rule!r} (try a smaller lr, "
                    "weight decay, or float64)"
                )
            # as the two-layer engine judges it: a loss exploding against its start
            if self.loss0 is None:
                self.loss0 = value
            elif value > self.blowup * max(self.loss0, 1e-12):
                raise DivergenceError(
                    f"training diverged at step {step}: the loss is {value:.3g}, "
                    f"{value / max(self.loss0, 1e-12):.1e} times its start {self.loss0:.3g} "
                    f"(limit {self.blowup:g}x); likely cause: learning rate {lr:g} too large "
                    f"for rule {self.rule!r} (try a smaller lr, weight decay, or float64)"
                )
            loss.backward()
            errs = rec.error_alignment() if record else {}
        row = {
            "step": step,
            "loss": value,
            "batch_accuracy": float((out.detach().argmax(1) == y).double().mean()),
            "lr": lr,
        }
        if record:
            self.history["record_step"].append(step)
            for name, metrics in weight_alignment(self.model, self.record_layers).items():
                for k, v in metrics.items():
                    row[f"{k}/{name}"] = v
            for name, v in errs.items():
                row[f"error_alignment/{name}"] = v
            for k, v in row.items():
                if "/" in k:
                    self._put(k, v, "record_step")
        if measure:
            grads = {n: m.weight.grad for n, m in rule_layers(self.model)}
            full = alignment(self.model, x, y, rule_grads=grads)
            self.history["measure_step"].append(step)
            for name, metrics in full.items():
                for k, v in metrics.items():
                    row[f"measure/{k}/{name}"] = v
                    self._put(f"measure/{k}/{name}", v, "measure_step")
        self.optimizer.step()
        self.scheduler.step()
        # parameters: every 10 steps and at the last (a NaN step also shows in the next loss)
        check_params = step % 10 == 0 or step == self.steps
        sums = torch.stack([p.detach().sum() for p in self._params]) if check_params else None
        if sums is not None and not bool(torch.isfinite(sums).all()):
            bad = [
                n
                for (n, _), v in zip(self._named, sums.tolist(), strict=True)
                if not math.isfinite(v)
            ]
            raise DivergenceError(
                f"training diverged at step {step}: parameter {bad[0]} became NaN/inf "
                f"(loss was {value:.4g}); likely cause: learning rate {lr:g} too large for "
                f"rule {self.rule!r} (try a smaller lr, weight decay, or float64)"
            )
        if self.has_mirror and self.mirror_every and step % self.mirror_every == 0:
            mirror(self.model, generator=self.noise)
        self.step = step
        for k in ("step", "loss", "batch_accuracy", "lr"):
            self.history[k].append(row[k])
        return row

    def fit(self) -> dict[str, list]:
        """Train for the configured number of steps; returns the history (plain lists)."""
        bar = None
        if self.progress:
            from ..progress import Progress

            # elapsed and time left; whole lines (no carriage returns) when not a terminal
            bar = Progress(self.steps - self.step, label="train", enabled=True)
        if self.step == 0 and not self.history["eval_step"]:
            self._log_eval()
        try:
            while self.step < self.steps:
                row = self.train_step()
                if self.eval_every and self.step % self.eval_every == 0:
                    row["test_accuracy"] = self._log_eval()
                elif self.step == self.steps:
                    row["test_accuracy"] = self._log_eval()
                if self.checkpoint_dir and (
                    self.step == self.steps
                    or (self.checkpoint_every and self.step % self.checkpoint_every == 0)
                ):
                    self.save_checkpoint(self.checkpoint_dir / f"step-{self.step:07d}.pt")
                for cb in self.callbacks:
                    cb(self, row)
                if bar is not None:
                    status = f"step {self.step}/{self.steps}, loss {row['loss']:.3f}"
                    if self.history["test_accuracy"]:
                        status += f", test accuracy {self.history['test_accuracy'][-1]:.3f}"
                    bar.done(1, status=status)
        finally:
            if bar is not None:
                bar.close()
        return self.history

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path) -> Path:
        """Model, optimiser, schedule, data order and history; loads with weights_only.
        Written atomically; in ``checkpoint_dir`` its SHA-256 goes into the directory's
        manifest (so a later run knows the file for its own)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self._save(tmp)
        if self.checkpoint_dir is not None and path.parent == self.checkpoint_dir:
            self._checkpoints = {k: v for k, v in self._checkpoints.items() if v}
            self._checkpoints[path.name] = sha256(path)
            write_manifest(
                self.checkpoint_dir, CHECKPOINT_MANIFEST, CHECKPOINT_TOOL, self._checkpoints
            )
        return path

    def _save(self, path) -> None:
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "position": self.position,
                "perm": self.perm,
                "shuffle": self.shuffle.get_state(),
                "noise": self.noise.get_state(),
                "history": self.history,
            },
            path,
        )

    def load_checkpoint(self, path) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        path = Path(path)
        check(path.is_file(), f"checkpoint {str(path)!r} does not exist")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.position = int(state["step"]), int(state["position"])
        self.perm = None if state["perm"] is None else state["perm"].cpu()
        self.shuffle.set_state(state["shuffle"].cpu())
        self.noise.set_state(state["noise"].cpu())
        self.history = state["history"]
        losses = self.history.get("loss") or []
        self.loss0 = losses[0] if losses else None


def run_from_config(config: dict, callbacks=(), progress: bool | None = None) -> dict:
    """Build data, model and rule from a config dict (the TOML layout of ``fa train``),
    train, and return plain metric series: the history lists keyed by metric name with
    their step indices (``step``, ``eval_step``, ``record_step``, ``measure_step``), plus
    ``final_test_accuracy`` and the completed ``config``. Same config, same numbers."""
    cfg = parse_config(config)
    threads = cfg["threads"]
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            data, model, kwargs = build(cfg)
            if progress is not None:
                kwargs["progress"] = progress
            trainer = Trainer(model, data, callbacks=callbacks, **kwargs)
            history = trainer.fit()
    finally:
        torch.set_num_threads(old_threads)
    out = {k: list(v) for k, v in history.items()}
    out["final_test_accuracy"] = history["test_accuracy"][-1]
    out["config"] = cfg
    return out
