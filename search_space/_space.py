"""Parameters, constraints, typed configs and the search space that joins them.

Everything here is pure Python: the tuner, the cost model and the advisor reason about configs
without importing torch or triton.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

Value = int | float | str | bool
ConfigT = TypeVar("ConfigT", bound="Config")
ValuesT = TypeVar("ValuesT", bound=Mapping[str, Value])  # a candidate passes through first_passing as it came


def config_key(values: Mapping[str, Value]) -> str:
    """Canonical text form of a config: ``name=value`` pairs sorted by name.

    Used as a dictionary key, a database column and a dedup key, so it must not depend on the
    order in which a caller built the mapping.
    """
    return ",".join(f"{k}={_fmt(values[k])}" for k in sorted(values))


def _fmt(v: Value) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


@dataclass(frozen=True)
class Config:
    """Base of the typed, frozen kernel configs (``FlashAttentionConfig``, ...).

    Subclasses are plain frozen dataclasses whose fields are the tunable parameters. ``to_dict``
    and ``from_dict`` convert to and from the ``{name: value}`` mappings that Optuna, the database
    and JSON use; ``from_dict`` names the missing or unknown keys instead of raising a TypeError.
    """

    def to_dict(self) -> dict[str, Value]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in values]
        unknown = [k for k in values if k not in names]
        if missing or unknown:
            raise ValueError(
                f"config for {cls.__name__}: missing {missing or 'none'}, unknown {unknown or 'none'}; "
                f"expected exactly {names}"
            )
        return cls(**{n: values[n] for n in names})

    def key(self) -> str:
        return config_key(self.to_dict())

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ParamConfig(Config):
    """A config of a generic space (e.g. a recorded Kernel Tuner landscape): named values only."""

    items: tuple[tuple[str, Value], ...] = ()

    def to_dict(self) -> dict[str, Value]:
        return dict(self.items)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ParamConfig:
        return cls(tuple(sorted(values.items())))

    def __getitem__(self, name: str) -> Value:
        return dict(self.items)[name]


@dataclass(frozen=True)
class Param:
    """One tunable parameter and its ordered domain (small to large where that has a meaning)."""

    name: str
    values: tuple[Value, ...]
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"parameter {self.name!r} has an empty domain")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"parameter {self.name!r} has repeated values: {self.values}")

    @property
    def is_numeric(self) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)


@dataclass(frozen=True)
class Constraint:
    """A rule a config must satisfy. ``check`` returns None when satisfied, else the reason.

    Reasons are user-facing text ("shared memory 245760 B > 232448 B per block on this device"),
    so they say what is wrong in numbers, not just which rule fired.
    """

    name: str
    check: Callable[[Mapping[str, Value]], str | None]


@dataclass(frozen=True)
class SearchSpace:
    """Parameter domains plus constraints; the unit the tuner, cost model and advisor share.

    Contract:
    - ``params`` fixes the parameter order (token order for the advisor, feature order for the
      cost model).
    - ``validate`` returns every reason a config is invalid (empty list: valid). Domain checks come
      first; constraints only run on in-domain configs.
    - ``default`` is always valid (the fallback the runtime launches when nothing is tuned).
    - ``__iter__`` enumerates the valid configs in a deterministic order.
    """

    name: str
    params: tuple[Param, ...]
    constraints: tuple[Constraint, ...] = ()
    default_values: Mapping[str, Value] | None = None
    config_type: type[Config] = ParamConfig
    # Free-form facts about the problem the space was built for (shape, hardware); carried for
    # the cost model's and advisor's features, never used to decide validity.
    context: Mapping[str, Any] = field(default_factory=dict)
    # The valid configs in the Cartesian order, where the space knows them without walking the
    # Cartesian product: a recorded landscape's are what was measured (hotspot's restrictions
    # leave 83k of its 4.4M points). Iteration and sampling then use the list: rejection
    # sampling from the Cartesian domain reached 1.9k of those 83k in its 100k tries, 12.6k of
    # gemm's 18k.
    listed: Callable[[], Sequence[Mapping[str, Value]]] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"search space {self.name!r} repeats parameter names: {names}")

    # --- structure -------------------------------------------------------------------------
    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        # Cached: validate() runs it for every config of 50k-config enumerations.
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"search space {self.name!r} has no parameter {name!r}; it has {self.names}")

    @property
    def cartesian_size(self) -> int:
        n = 1
        for p in self.params:
            n *= len(p.values)
        return n

    # --- validity --------------------------------------------------------------------------
    def validate(self, values: Mapping[str, Value]) -> list[str]:
        reasons = []
        missing = [n for n in self.names if n not in values]
        unknown = [k for k in values if k not in self.names]
        if missing:
            reasons.append(f"missing parameters {missing}")
        if unknown:
            reasons.append(f"unknown parameters {unknown} (space {self.name!r} has {list(self.names)})")
        for p in self.params:
            if p.name in values and values[p.name] not in p.values:
                reasons.append(f"{p.name}={values[p.name]!r} is outside its domain {list(p.values)}")
        if reasons:
            return reasons
        for c in self.constraints:
            reason = c.check(values)
            if reason is not None:
                reasons.append(f"{c.name}: {reason}")
        return reasons

    def is_valid(self, values: Mapping[str, Value]) -> bool:
        return not self.validate(values)

    # --- enumeration and sampling ----------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Value]]:
        if self.listed is not None:
            yield from (dict(values) for values in self.listed())
            return
        for combo in itertools.product(*(p.values for p in self.params)):
            values = dict(zip(self.names, combo, strict=True))
            if self.is_valid(values):
                yield values

    def enumerate(self, limit: int | None = None) -> list[dict[str, Value]]:
        return list(itertools.islice(iter(self), limit))

    def sample(self, rng: random.Random, n: int, *, max_tries: int = 100_000) -> list[dict[str, Value]]:
        """Up to ``n`` distinct valid configs drawn uniformly from the Cartesian domain, in the
        order drawn (from the ``listed`` configs where the space has them: all of them, shuffled,
        when n covers them; the order decides ties in a model's ranking of a sampled pool)."""
        if self.listed is not None:
            listed = self.listed()
            return [dict(listed[i]) for i in rng.sample(range(len(listed)), min(n, len(listed)))]
        seen: dict[str, dict[str, Value]] = {}
        for _ in range(max_tries):
            if len(seen) >= n:
                break
            values = {p.name: rng.choice(p.values) for p in self.params}
            key = config_key(values)
            if key not in seen and self.is_valid(values):
                seen[key] = values
        return list(seen.values())

    def default(self) -> dict[str, Value]:
        if self.default_values is not None:
            return dict(self.default_values)
        for values in self:
            return values
        raise ValueError(f"search space {self.name!r} has no valid config")

    # --- typed configs ---------------------------------------------------------------------
    def config(self, values: Mapping[str, Value]) -> Config:
        """The typed config for ``values``; raises ValueError with every reason it is invalid."""
        reasons = self.validate(values)
        if reasons:
            raise ValueError(f"invalid config {config_key(values)} for {self.name}: " + "; ".join(reasons))
        return self.config_type.from_dict(values)


def passes(values: Mapping[str, Value], rules: Iterable[Constraint]) -> bool:
    """Whether every rule accepts ``values`` (no domain check: callers build in-domain values)."""
    return all(r.check(values) is None for r in rules)


def first_passing(candidates: Iterable[ValuesT], rules: Sequence[Constraint]) -> ValuesT | None:
    """The first of ``candidates`` that every rule accepts, None when none does.

    ``candidates`` is consumed lazily and in order, so a default-config heuristic lists its
    preferences best first and pays for checking only as many as it needs.
    """
    return next((c for c in candidates if passes(c, rules)), None)


def pow2_ceil(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    if n < 1:
        raise ValueError(f"expected a positive size, got {n}")
    return 1 << (n - 1).bit_length()


def ordered_unique(values: Sequence[Value]) -> tuple[Value, ...]:
    return tuple(dict.fromkeys(values))

