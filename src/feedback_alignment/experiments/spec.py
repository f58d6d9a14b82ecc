"""Experiment specs: a TOML file (or dict) describing a grid of runs, validated in full.

Layout (see docs/sweeps.md for a complete example)::

    [study]      name, system ("twolayer" | "deep"), repetitions, seed, seeds, seed_by,
                 pack, threads, description
    [fixed]      field = value            the same for every run
    [grid]       field = [v1, v2, ...]    cartesian product over every grid field
    [[zip]]      f1 = [...], f2 = [...]   fields that vary together (equal lengths);
                                          each [[zip]] table is one more product axis
    [profiles.NAME]  study/fixed/grid/zip tables merged over the base when NAME is picked

Fields of the two-layer system are declared once, in :mod:`feedback_alignment.twolayer.schema`
(:data:`TWOLAYER_FIELDS` here); the deep system takes the dotted keys of the ``fa train``
config (``train.lr``, ``rule.name``, ...) as deep/config.py declares them, written as
nested tables or quoted dotted keys. Every repetition gets a seed derived from the study
seed (numpy ``SeedSequence``); a two-layer run draws its network from ``net_seed`` and its
data from ``data_seed``, both derived from the repetition seed, so the data are fresh per
repetition like the paper's.

Validation looks at the whole spec before anything runs: every error is one line naming
the key, the bad value and what is accepted (:class:`~feedback_alignment.errors.ConfigError`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import tomlfile
from ..bounds import BOUNDS, MAX_SEED, MAX_STEPS, fmt_int
from ..errors import ConfigError, fmt, refusal
from ..fields import Check, Field, by_name, integer, is_int, one_of
from ..twolayer.schema import FIELDS, log_count, step_size

SYSTEMS = ("twolayer", "deep")
TOP_KEYS = ("study", "fixed", "grid", "zip", "profiles")
# the two-layer fields, their defaults and accepted values: twolayer/schema.py
TWOLAYER_FIELDS: dict[str, Field] = FIELDS


def _bad(key: str, value, accepted: str) -> ConfigError:
    return refusal(f"spec key {key}", value, accepted)


def _seeds_ok(v) -> bool:
    ok = isinstance(v, list) and v and all(is_int(s) and 0 <= s <= MAX_SEED for s in v)
    return v is None or (ok and len(v) <= BOUNDS["runs"].hi and len(set(v)) == len(v))


STUDY_KEYS: dict[str, Field] = by_name(
    Field(
        "name",
        "study",
        Check("a non-empty string", lambda v: isinstance(v, str) and v.strip() != ""),
        "the study's name",
    ),
    Field("description", "", Check("a string", lambda v: isinstance(v, str)), "free text"),
    Field("system", "twolayer", one_of(SYSTEMS), "which trainer runs the study"),
    Field("repetitions", 1, integer(1, BOUNDS["runs"].hi), "repetitions of every grid point"),
    Field("seed", 0, integer(0, MAX_SEED), "the study seed the repetition seeds derive from"),
    Field(
        "seeds",
        None,
        Check(
            f"a non-empty array of at most {fmt_int(BOUNDS['runs'].hi)} distinct integers in "
            f"[0, {fmt_int(MAX_SEED)}]",
            _seeds_ok,
        ),
        "explicit repetition seeds",
    ),
    Field("seed_by", "repetition", one_of(("repetition", "run")), "what a seed is derived from"),
    Field(
        "pack",
        "auto",
        Check(
            '"auto" or an integer >= 1 (most runs per ensemble)',
            lambda v: v == "auto" or (is_int(v) and v >= 1),
        ),
        "the most runs per ensemble",
    ),
    Field("threads", 1, integer(1, 4096), "torch threads per task"),
)


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Run:
    """One run: its resolved config, repetition and seeds; ``run_id`` names it in a store."""

    run_id: str
    index: int
    system: str
    config: dict
    rep: int
    seed: int
    net_seed: int
    data_seed: int


@dataclass
class Spec:
    """A validated spec. :meth:`runs` expands it into :class:`Run` objects."""

    name: str
    system: str
    study: dict
    fixed: dict
    grid: dict
    zips: list[dict]
    profile: str | None = None
    raw: dict = field(default_factory=dict)

    @property
    def repetitions(self) -> int:
        seeds = self.study.get("seeds")
        return len(seeds) if seeds else self.study["repetitions"]

    def configs(self) -> list[dict]:
        """Every grid point's resolved config (no repetitions)."""
        axes: list[list[dict]] = [[{k: v} for v in vals] for k, vals in self.grid.items()]
        for z in self.zips:
            n = len(next(iter(z.values())))
            axes.append([{k: vals[i] for k, vals in z.items()} for i in range(n)])
        out = []
        for combo in itertools.product(*axes):
            cfg = dict(self.fixed)
            for part in combo:
                cfg.update(part)
            out.append(_resolve(self.system, cfg))
        return out

    def runs(self) -> list[Run]:
        """Every run, grid point-major, repetitions innermost; ids are content hashes."""
        out: list[Run] = []
        seen: set[str] = set()
        per_rep = self.study.get("seeds") or self.study["seed_by"] == "repetition"
        seeds: dict[int, tuple[int, int, int]] = {}  # rep -> seeds, when the config is not in them
        for cfg in self.configs():
            for rep in range(self.repetitions):
                if not per_rep or rep not in seeds:
                    seed = self._seed(rep, cfg)
                    seeds[rep] = (seed, *derived_seeds(seed))
                seed, net_seed, data_seed = seeds[rep]
                run_id = run_key(self.system, cfg, rep, seed)
                if run_id in seen:
                    raise ConfigError(
                        f"spec expands to the same run twice (config {fmt(cfg)}, repetition "
                        f"{rep}); accepted: grid and zip values that differ"
                    )
                seen.add(run_id)
                out.append(Run(run_id, len(out), self.system, cfg, rep, seed, net_seed, data_seed))
        return out

    def _seed(self, rep: int, cfg: dict) -> int:
        seeds = self.study.get("seeds")
        if seeds:
            return int(seeds[rep])
        entropy = [self.study["seed"], rep]
        if self.study["seed_by"] == "run":
            digest = hashlib.sha256(_canon(cfg).encode()).digest()
            entropy += list(np.frombuffer(digest[:8], dtype=np.uint32))
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])

    def to_dict(self) -> dict:
        return {
            "study": self.study,
            "fixed": self.fixed,
            "grid": self.grid,
            "zip": self.zips,
            "profile": self.profile,
        }


def derived_seeds(seed: int) -> tuple[int, int]:
    """(net_seed, data_seed) of a repetition seed: independent streams, both 32-bit."""
    a, b = np.random.SeedSequence(seed).generate_state(2, np.uint32)
    return int(a), int(b)


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def run_key(system: str, config: dict, rep: int, seed: int) -> str:
    """A run's identity: a hash of its system, resolved config, repetition and seed."""
    blob = _canon({"system": system, "config": config, "rep": rep, "seed": seed})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- resolution
def _copy(value):
    """A config value no run shares with another (arrays copied; scalars are immutable,
    and copying every one made planning 1e5 runs take half a minute)."""
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def _resolve(system: str, cfg: dict) -> dict:
    """Fill defaults (two-layer) and resolve derived values; the config a run records."""
    if system == "deep":
        return {k: cfg[k] for k in sorted(cfg)}
    out = {k: _copy(cfg.get(k, f.default)) for k, f in TWOLAYER_FIELDS.items()}
    out["lr"] = step_size(out["lr"], out["activation"])
    return out


# --------------------------------------------------------------------------- deep fields
def _deep_fields() -> dict[str, Field]:
    """The ``fa train`` config's keys as spec fields: their one declaration
    (:data:`feedback_alignment.deep.config.FIELDS`, fields named by their dotted keys);
    seed and threads come from the study."""
    from ..deep.config import FIELDS as DEEP_FIELDS

    out = {}
    for keys in DEEP_FIELDS.values():
        for f in keys.values():
            if f.name not in ("seed", "threads"):
                out[f.name] = f
    return out


def deep_config(run: Run, threads: int = 1) -> dict:
    """The nested ``fa train`` config of a deep run (its seed and thread count set)."""
    nested: dict = {"seed": run.seed, "threads": threads}
    for key, value in run.config.items():
        section, _, k = key.rpartition(".")
        if section:
            nested.setdefault(section, {})[k] = copy.deepcopy(value)
        else:
            nested[k] = copy.deepcopy(value)
    return nested


# --------------------------------------------------------------------------- parsing
def _flatten(section: str, table: dict, system: str, leaves: dict) -> dict:
    """Section table -> {field: value}; deep nested tables become dotted keys."""
    out: dict = {}
    for k, v in table.items():
        if system == "deep" and isinstance(v, dict) and k not in leaves:
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = v2
        else:
            out[k] = v
    for k in out:
        if k in ("seed", "threads"):
            raise ConfigError(
                f"spec key {section}.{k} is set by the study, not per run; accepted: "
                "study.seed or study.seeds (the repetition seeds), study.threads"
            )
        if k not in leaves:
            accepted = ", ".join(leaves)
            raise ConfigError(
                f"spec key {section}.{k} is unknown for system {system!r}; accepted: {accepted}"
            )
    return out


def _values(section: str, key: str, vals) -> list:
    if not isinstance(vals, list):
        raise _bad(f"{section}.{key}", vals, "an array of values")
    if not vals:
        raise _bad(f"{section}.{key}", vals, "a non-empty array of values")
    return vals


def _merge_profile(raw: dict, name: str) -> dict:
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, dict):
        raise _bad("profiles", profiles, "a table of profile tables")
    if name not in profiles:
        accepted = ", ".join(map(fmt, profiles)) or "none (the spec defines no profiles)"
        raise ConfigError(f"spec profile {name!r} is not defined; accepted: {accepted}")
    prof = profiles[name]
    if not isinstance(prof, dict):
        raise _bad(f"profiles.{name}", prof, "a table with study/fixed/grid/zip tables")
    for k in prof:
        if k not in ("study", "fixed", "grid", "zip"):
            raise ConfigError(
                f"spec key profiles.{name}.{k} is unknown; accepted: study, fixed, grid, zip"
            )
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "profiles"})
    for sec in ("study", "fixed", "grid"):
        given = prof.get(sec, {})
        if not isinstance(given, dict):
            raise _bad(f"profiles.{name}.{sec}", given, "a table")
        base = out.setdefault(sec, {})
        if not isinstance(base, dict):
            continue  # reported by the main validation
        base.update(given)
        if sec in ("fixed", "grid"):
            # a field the profile places in fixed/grid leaves the base's other section
            other = out.get("grid" if sec == "fixed" else "fixed", {})
            if isinstance(other, dict):
                for k in given:
                    other.pop(k, None)
    if "zip" in prof:
        out["zip"] = prof["zip"]
    return out


def parse_spec(raw: dict, profile: str | None = None) -> Spec:
    """Validate a spec dict (the parsed TOML) and return a :class:`Spec`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"spec must be a table; got {type(raw).__name__}")
    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(f"spec key {k} is unknown; accepted: {', '.join(TOP_KEYS)}")
    if profile is not None:
        raw = _merge_profile(raw, profile)
    elif "profiles" in raw and not isinstance(raw["profiles"], dict):
        raise _bad("profiles", raw["profiles"], "a table of profile tables")

    study_in = raw.get("study", {})
    if not isinstance(study_in, dict):
        raise _bad("study", study_in, "a table")
    for k in study_in:
        if k not in STUDY_KEYS:
            raise ConfigError(f"spec key study.{k} is unknown; accepted: {', '.join(STUDY_KEYS)}")
    study = {
        k: f.validate(study_in.get(k, f.default), f"spec key study.{k}")
        for k, f in STUDY_KEYS.items()
    }
    seeds = study["seeds"]
    if seeds is not None:
        if "repetitions" in study_in and study_in["repetitions"] != len(seeds):
            raise _bad(
                "study.repetitions",
                study_in["repetitions"],
                f"{len(seeds)} (the length of study.seeds) or leave it out",
            )
    system = study["system"]
    leaves = TWOLAYER_FIELDS if system == "twolayer" else _deep_fields()

    fixed_in = raw.get("fixed", {})
    if not isinstance(fixed_in, dict):
        raise _bad("fixed", fixed_in, "a table")
    fixed = _flatten("fixed", fixed_in, system, leaves)
    for k, v in fixed.items():
        fixed[k] = leaves[k].validate(v, f"spec key fixed.{k}")

    grid_in = raw.get("grid", {})
    if not isinstance(grid_in, dict):
        raise _bad("grid", grid_in, "a table of arrays")
    grid = _flatten("grid", grid_in, system, leaves)
    for k, vals in grid.items():
        vals = _values("grid", k, vals)
        grid[k] = [leaves[k].validate(v, f"spec key grid.{k}") for v in vals]
        if len({_canon(v) for v in grid[k]}) != len(grid[k]):
            raise _bad(f"grid.{k}", vals, "distinct values")

    zips_in = raw.get("zip", [])
    if isinstance(zips_in, dict):
        zips_in = [zips_in]
    if not isinstance(zips_in, list):
        raise _bad("zip", zips_in, "a table or an array of tables ([[zip]])")
    zips = []
    for i, z in enumerate(zips_in):
        where = f"zip[{i}]"
        if not isinstance(z, dict) or not z:
            raise _bad(where, z, "a non-empty table of equal-length arrays")
        z = _flatten(where, z, system, leaves)
        lengths = set()
        for k, vals in z.items():
            vals = _values(where, k, vals)
            z[k] = [leaves[k].validate(v, f"spec key {where}.{k}") for v in vals]
            lengths.add(len(vals))
        if len(lengths) != 1:
            first = next(iter(z))
            raise _bad(
                f"{where}.{first}",
                z[first],
                f"arrays of one length across {', '.join(z)} (got lengths "
                f"{sorted(len(v) for v in z.values())})",
            )
        zips.append(z)

    places: dict[str, str] = {}
    for sec, keys in [("fixed", fixed), ("grid", grid)] + [
        (f"zip[{i}]", z) for i, z in enumerate(zips)
    ]:
        for k in keys:
            if k in places:
                raise ConfigError(
                    f"spec key {sec}.{k} repeats {places[k]}.{k}; accepted: each field in "
                    "one place (fixed, grid or one zip)"
                )
            places[k] = sec

    spec = Spec(study["name"], system, study, fixed, grid, zips, profile, raw)
    _check_plan_size(spec)
    _check_combinations(spec)
    return spec


def _check_plan_size(spec: Spec) -> None:
    """Refuse a spec that expands to more runs than the bound, counted before expanding."""
    axes = [len(v) for v in spec.grid.values()] + [len(next(iter(z.values()))) for z in spec.zips]
    runs = math.prod(axes) * spec.repetitions
    bound = BOUNDS["runs"]
    if runs > bound.hi:
        shape = " x ".join(map(str, axes)) or "1"
        raise ConfigError(
            f"spec expands to {runs} runs (grid and zips {shape}, {spec.repetitions} "
            f"repetition(s)); accepted: at most {fmt_int(bound.hi)} runs (beyond: {bound.cost})"
        )


def _check_combinations(spec: Spec) -> None:
    """Checks that need a whole run config (cross-field rules), run on every grid point."""
    configs = spec.configs()
    if spec.system == "deep":
        from ..deep.config import parse_config

        for cfg in configs:
            nested = deep_config(Run("", 0, "deep", cfg, 0, 0, 0, 0))
            try:
                parse_config(nested)
            except ConfigError as exc:
                raise ConfigError(f"spec: {exc}") from None
        return
    from ..twolayer.options import check_moved, check_recorded_rows

    for cfg in configs:
        if cfg["stop"] == "plateau" and cfg["max_steps"] and cfg["max_steps"] < cfg["min_steps"]:
            raise _bad(
                "max_steps", cfg["max_steps"], f">= min_steps ({cfg['min_steps']}) or 0 (no cap)"
            )
        if cfg["stop"] == "plateau" and cfg["tol"] == 0 and not cfg["max_steps"]:
            raise ConfigError(
                'spec: stop = "plateau" with tol = 0 never ends (no MSE change is below 0) '
                "and max_steps = 0 sets no cap; accepted: tol > 0, or max_steps >= 1"
            )
        if cfg["stop"] == "steps":
            check_moved(cfg["steps"], cfg["metrics"], "spec: ")
        horizon = cfg["steps"] if cfg["stop"] == "steps" else cfg["max_steps"] or MAX_STEPS
        rs = cfg["record_steps"]
        extra = min(log_count(rs), horizon + 1) if isinstance(rs, str) else len(rs)
        check_recorded_rows(horizon, cfg["record_every"], extra, "spec: ")
        if cfg["device"] == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise _bad("device", "cuda", '"cpu" or "auto" (this torch build sees no GPU)')


# --------------------------------------------------------------------------- loading
def load_spec(source, profile: str | None = None) -> Spec:
    """A :class:`Spec` from a TOML path, a TOML string's parsed dict, or a :class:`Spec`."""
    if isinstance(source, Spec):
        if profile is not None and profile != source.profile:
            return parse_spec(source.raw, profile)
        return source
    if isinstance(source, dict):
        return parse_spec(source, profile)
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"spec file {str(path)!r} is a directory; accepted: a TOML file")
    if not path.is_file():
        raise ConfigError(f"spec file {str(path)!r} does not exist; accepted: a TOML file")
    raw = tomlfile.read(path, f"spec file {str(path)!r}")  # its size and nesting bounded first
    if not raw:
        raise ConfigError(
            f"spec file {str(path)!r} is empty; accepted: a study spec with at least a "
            "[study] table (see docs/sweeps.md)"
        )
    return parse_spec(raw, profile)
