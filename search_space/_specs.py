"""Problem specs (what is being computed) and shape buckets (what a tuned config is keyed by).

A spec is exact: the shapes of one call. A bucket rounds the sizes that vary at run time (batch,
sequence lengths) up to powers of two and keeps the ones that define the kernel's code (heads,
head dim, dtype, causal, page size) exact, so one tuned config serves every call in its bucket.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ._space import pow2_ceil

DTYPES = ("fp16", "bf16", "fp32")
DTYPE_ALIASES = {
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
}
DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def normalize_dtype(value: Any, *, arg: str = "dtype") -> str:
    text = str(value).lower()
    if text not in DTYPE_ALIASES:
        raise ValueError(f"{arg}={value!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPE_ALIASES[text]


def _parse_bool(text: str, arg: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{arg}={text!r} is not a boolean; use true/false or 1/0")


@dataclass(frozen=True)
class Bucket:
    """A shape bucket: exact dimensions plus power-of-two rounded sizes.

    ``key`` is the database column. ``distance`` is how far two buckets of the same kernel are
    apart: None when their exact parts differ (a config tuned for head_dim 64 says nothing safe
    about head_dim 128), else the summed |log2| gap of the rounded sizes.
    """

    kernel: str
    exact: tuple[tuple[str, Any], ...]
    scaled: tuple[tuple[str, int], ...]

    @property
    def key(self) -> str:
        exact = ",".join(f"{k}={_text(v)}" for k, v in self.exact)
        scaled = ",".join(f"{k}={v}" for k, v in self.scaled)
        return f"{self.kernel}|{exact}|{scaled}"

    def distance(self, other: Bucket) -> float | None:
        if self.kernel != other.kernel or self.exact != other.exact:
            return None
        mine, theirs = dict(self.scaled), dict(other.scaled)
        if mine.keys() != theirs.keys():
            return None
        return float(sum(abs(math.log2(mine[k]) - math.log2(theirs[k])) for k in mine))

    @classmethod
    def parse(cls, key: str) -> Bucket:
        try:
            kernel, exact, scaled = key.split("|")
            exact_items = tuple((k, _untext(v)) for k, v in (kv.split("=", 1) for kv in exact.split(",") if kv))
            scaled_items = tuple((k, int(v)) for k, v in (kv.split("=", 1) for kv in scaled.split(",") if kv))
        except ValueError as exc:
            raise ValueError(f"malformed bucket key {key!r}: {exc}") from None
        return cls(kernel, exact_items, scaled_items)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _untext(v: str) -> Any:
    try:
        return int(v)
    except ValueError:
        return v


class ProblemSpec:
    """Base of the frozen spec dataclasses.

    Subclasses declare ``kernel`` (registry name), ``ALIASES`` (short names accepted on the
    command line, e.g. ``Hq`` for ``heads_q``), ``EXACT`` and ``SCALED`` (which fields a bucket
    keeps exact and which it rounds to powers of two), and validate themselves in
    ``__post_init__`` with errors that name the field.
    """

    kernel: ClassVar[str]
    ALIASES: ClassVar[Mapping[str, str]] = {}
    EXACT: ClassVar[tuple[str, ...]] = ()
    SCALED: ClassVar[tuple[str, ...]] = ()
    # Several fields set at once by one shortcut key, e.g. ``seq`` -> seq_q and seq_kv.
    SHORTCUTS: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProblemSpec:
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(f"unknown {cls.kernel} shape fields {unknown}; fields are {names}")
        return cls(**data)

    @classmethod
    def parse(cls, items: Iterable[str] | str, defaults: Mapping[str, Any] | None = None) -> ProblemSpec:
        """Build a spec from ``key=value`` items (CLI ``--shape``), aliases and shortcuts allowed.

        ``items`` may be one comma-separated string (``"B=1,Hq=8,seq=512"``) or a list of items.
        """
        if isinstance(items, str):
            items = [part for part in items.replace(" ", ",").split(",") if part]
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values: dict[str, Any] = dict(defaults or {})
        for item in items:
            if "=" not in item:
                raise ValueError(f"malformed shape item {item!r}: expected key=value (e.g. head_dim=128)")
            raw_key, raw_value = (s.strip() for s in item.split("=", 1))
            targets = cls.SHORTCUTS.get(raw_key) or (cls.ALIASES.get(raw_key, raw_key),)
            for name in targets:
                if name not in fields:
                    accepted = sorted([*fields, *cls.ALIASES, *cls.SHORTCUTS])
                    raise ValueError(f"unknown shape key {raw_key!r} for {cls.kernel}; accepted keys: {', '.join(accepted)}")
                values[name] = _convert(fields[name].type, raw_value, name)
        missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"shape for {cls.kernel} is missing {missing}")
        return cls(**values)

    def bucket(self) -> Bucket:
        exact = tuple((k, getattr(self, k)) for k in self.EXACT)
        scaled = tuple((k, pow2_ceil(getattr(self, k))) for k in self.SCALED)
        return Bucket(self.kernel, exact, scaled)

    def representative(self) -> ProblemSpec:
        """The spec a bucket is tuned on: this one with every scaled size rounded up."""
        return dataclasses.replace(self, **dict(self.bucket().scaled))  # type: ignore[type-var]

    @classmethod
    def from_bucket(cls, bucket: Bucket) -> ProblemSpec:
        return cls(**dict(bucket.exact), **dict(bucket.scaled))

    def describe(self) -> str:
        return ",".join(f"{k}={_text(v)}" for k, v in self.to_dict().items())

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")


def _convert(annotation: Any, raw: str, name: str) -> Any:
    kind = str(annotation)
    if kind in ("int", "<class 'int'>"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not an integer") from None
    if kind in ("bool", "<class 'bool'>"):
        return _parse_bool(raw, name)
    return raw


@dataclass(frozen=True)
class FlashAttentionSpec(ProblemSpec):
    """Prefill attention: q ``[batch, heads_q, seq_q, head_dim]``, k/v ``[batch, heads_kv, seq_kv, head_dim]``."""

    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_kv: int
    head_dim: int
    dtype: str = "bf16"
    causal: bool = False

    kernel: ClassVar[str] = "flash_attention"
    ALIASES: ClassVar[Mapping[str, str]] = {
        "B": "batch", "Hq": "heads_q", "H": "heads_q", "Hkv": "heads_kv", "Sq": "seq_q",
        "Skv": "seq_kv", "D": "head_dim",
    }
    SHORTCUTS: ClassVar[Mapping[str, tuple[str, ...]]] = {"seq": ("seq_q", "seq_kv"), "S": ("seq_q", "seq_kv")}
    EXACT: ClassVar[tuple[str, ...]] = ("heads_q", "heads_kv", "head_dim", "dtype", "causal")
    SCALED: ClassVar[tuple[str, ...]] = ("batch", "seq_q", "seq_kv")
    MAX_HEAD_DIM: ClassVar[int] = 256

    def __post_init__(self) -> None:
        self._positive("batch", "heads_q", "heads_kv", "seq_q", "seq_kv", "head_dim")
        if self.heads_q % self.heads_kv:
            raise ValueError(
                f"heads_q={self.heads_q} must be a multiple of heads_kv={self.heads_kv} (GQA/MQA share KV heads)"
            )
        if self.head_dim > self.MAX_HEAD_DIM:
            raise ValueError(f"head_dim={self.head_dim} is over the supported maximum {self.MAX_HEAD_DIM}")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        object.__setattr__(self, "causal", bool(self.causal))

    @property
    def flops(self) -> float:
        """4*B*Hq*Sq*Skv*D, halved for causal when Sq == Skv (the count DESIGN.md fixes)."""
        f = 4.0 * self.batch * self.heads_q * self.seq_q * self.seq_kv * self.head_dim
        return f / 2 if self.causal and self.seq_q == self.seq_kv else f


@dataclass(frozen=True)
class PagedAttentionSpec(ProblemSpec):
    """Decode attention over a paged KV cache: one query token for each of ``num_seqs`` sequences.

    ``context_len`` is the longest sequence in the batch (tokens already in the cache, >= 1).
    """

    num_seqs: int
    heads_q: int
    heads_kv: int
    head_dim: int
    context_len: int
    block_size: int = 16
    dtype: str = "bf16"

    kernel: ClassVar[str] = "paged_attention"
    ALIASES: ClassVar[Mapping[str, str]] = {
        "S": "num_seqs", "B": "num_seqs", "batch": "num_seqs", "Hq": "heads_q", "H": "heads_q",
        "Hkv": "heads_kv", "D": "head_dim", "ctx": "context_len", "L": "context_len",
        "page_size": "block_size",
    }
    EXACT: ClassVar[tuple[str, ...]] = ("heads_q", "heads_kv", "head_dim", "block_size", "dtype")
    SCALED: ClassVar[tuple[str, ...]] = ("num_seqs", "context_len")
    MAX_HEAD_DIM: ClassVar[int] = 256

    def __post_init__(self) -> None:
        self._positive("num_seqs", "heads_q", "heads_kv", "head_dim", "context_len", "block_size")
        if self.heads_q % self.heads_kv:
            raise ValueError(
                f"heads_q={self.heads_q} must be a multiple of heads_kv={self.heads_kv} (GQA/MQA share KV heads)"
            )
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size={self.block_size} must be a power of two")
        if self.head_dim > self.MAX_HEAD_DIM:
            raise ValueError(f"head_dim={self.head_dim} is over the supported maximum {self.MAX_HEAD_DIM}")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))

    @property
    def bytes_moved(self) -> float:
        """K and V read once per KV head, plus Q and O (DESIGN.md's count), at full context."""
        elt = DTYPE_BYTES[self.dtype]
        kv = 2 * self.num_seqs * self.context_len * self.heads_kv * self.head_dim * elt
        qo = 2 * self.num_seqs * self.heads_q * self.head_dim * elt
        return float(kv + qo)


KV_DTYPES = ("auto", "fp8")


@dataclass(frozen=True)
class VarlenAttentionSpec(ProblemSpec):
    """One serving step: a ragged batch of ``num_seqs`` sequences over a paged (or packed) KV cache.

    Sequence b brings ``q_b`` new tokens (0 for a sequence idle this step, 1 for decode, 2-8 for
    speculative rows, hundreds for a chunked-prefill chunk) and attends to ``k_b`` keys (its cached
    prefix plus the new tokens). Only host-known sizes describe the batch, so the runtime can key
    a launch without reading the device: ``total_q`` (sum of q_b, the packed query rows),
    ``max_seqlen_q`` (max q_b) and ``max_seqlen_k`` (max k_b). ``block_size`` is the page size
    of the cache, 0 for contiguous K/V (packed with ``cu_seqlens_k`` or batched ``[B, S, H, D]``).
    ``kv_dtype`` "fp8" is an e4m3 cache with descale factors. The mask and score features are
    part of the bucket: ``window_left``/``window_right`` as flash-attn's ``window_size`` (-1 =
    unbounded), ``softcap``, ``alibi`` and ``sinks`` say whether those terms are present.
    """

    num_seqs: int
    total_q: int
    max_seqlen_q: int
    max_seqlen_k: int
    heads_q: int
    heads_kv: int
    head_dim: int
    block_size: int = 16
    dtype: str = "bf16"
    kv_dtype: str = "auto"
    causal: bool = True
    window_left: int = -1
    window_right: int = -1
    softcap: bool = False
    alibi: bool = False
    sinks: bool = False

    kernel: ClassVar[str] = "varlen_attention"
    ALIASES: ClassVar[Mapping[str, str]] = {
        "S": "num_seqs", "B": "num_seqs", "T": "total_q", "tokens": "total_q", "Sq": "max_seqlen_q",
        "q": "max_seqlen_q", "ctx": "max_seqlen_k", "Skv": "max_seqlen_k", "Hq": "heads_q", "H": "heads_q",
        "Hkv": "heads_kv", "D": "head_dim", "page_size": "block_size", "left": "window_left",
        "right": "window_right",
    }
    EXACT: ClassVar[tuple[str, ...]] = ("heads_q", "heads_kv", "head_dim", "block_size", "dtype", "kv_dtype",
                                        "causal", "window_left", "window_right", "softcap", "alibi", "sinks")
    SCALED: ClassVar[tuple[str, ...]] = ("num_seqs", "total_q", "max_seqlen_q", "max_seqlen_k")
    MAX_HEAD_DIM: ClassVar[int] = 256

    def __post_init__(self) -> None:
        self._positive("num_seqs", "total_q", "max_seqlen_q", "max_seqlen_k", "heads_q", "heads_kv", "head_dim")
        if self.heads_q % self.heads_kv:
            raise ValueError(
                f"heads_q={self.heads_q} must be a multiple of heads_kv={self.heads_kv} (GQA/MQA share KV heads)"
            )
        if self.head_dim > self.MAX_HEAD_DIM:
            raise ValueError(f"head_dim={self.head_dim} is over the supported maximum {self.MAX_HEAD_DIM}")
        if not isinstance(self.block_size, int) or self.block_size < 0:
            raise ValueError(f"block_size={self.block_size!r} must be a page size >= 1, or 0 for contiguous K/V")
        if self.max_seqlen_q > self.total_q:
            raise ValueError(f"max_seqlen_q={self.max_seqlen_q} is more than total_q={self.total_q} query rows")
        if self.total_q > self.num_seqs * self.max_seqlen_q:
            raise ValueError(f"total_q={self.total_q} rows cannot come from num_seqs={self.num_seqs} sequences of "
                             f"at most max_seqlen_q={self.max_seqlen_q} tokens")
        for name in ("window_left", "window_right"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < -1:
                raise ValueError(f"{name}={value!r} must be an integer >= 0, or -1 for unbounded")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        if self.dtype == "fp32":
            raise ValueError("dtype='fp32' is not supported by varlen_attention; use fp16 or bf16")
        kv = str(self.kv_dtype).lower().replace("float8_e4m3fn", "fp8").replace("fp8_e4m3", "fp8")
        if kv not in KV_DTYPES:
            raise ValueError(f"kv_dtype={self.kv_dtype!r} is not supported; use 'auto' (= dtype) or 'fp8' (e4m3)")
        object.__setattr__(self, "kv_dtype", kv)
        for name in ("causal", "softcap", "alibi", "sinks"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.causal:  # flash-attn: causal is a right window of 0
            object.__setattr__(self, "window_right", 0)

    def bucket(self) -> Bucket:
        """Rounds the query rows *beyond one per sequence* (``extra_q + 1`` to a power of two)
        rather than ``total_q``: 64 decode rows plus a 512-token chunk stays "decode rows plus
        one chunk" (128 sequences, 512 extra rows) instead of 127 rows of four tokens each."""
        exact = tuple((k, getattr(self, k)) for k in self.EXACT)
        extra = max(0, self.total_q - self.num_seqs)
        scaled = (("num_seqs", pow2_ceil(self.num_seqs)), ("extra_q", pow2_ceil(extra + 1)),
                  ("max_seqlen_q", pow2_ceil(self.max_seqlen_q)), ("max_seqlen_k", pow2_ceil(self.max_seqlen_k)))
        return Bucket(self.kernel, exact, scaled)

    def representative(self) -> VarlenAttentionSpec:
        return self.from_bucket(self.bucket())

    @classmethod
    def from_bucket(cls, bucket: Bucket) -> VarlenAttentionSpec:
        """The batch a bucket is tuned on: its rounded sizes, ``extra_q`` rows beyond one per
        sequence (within what ``num_seqs`` sequences of ``max_seqlen_q`` tokens can hold)."""
        scaled = dict(bucket.scaled)
        num_seqs, max_q = scaled["num_seqs"], scaled["max_seqlen_q"]
        total = min(num_seqs * max_q, max(max_q, num_seqs + scaled["extra_q"] - 1))
        return cls(**dict(bucket.exact), num_seqs=num_seqs, total_q=total, max_seqlen_q=max_q,
                   max_seqlen_k=scaled["max_seqlen_k"])

    @property
    def group(self) -> int:
        return self.heads_q // self.heads_kv

    @property
    def kv_bytes_per_elt(self) -> int:
        return 1 if self.kv_dtype == "fp8" else DTYPE_BYTES[self.dtype]


SPECS: dict[str, type[ProblemSpec]] = {
    FlashAttentionSpec.kernel: FlashAttentionSpec,
    PagedAttentionSpec.kernel: PagedAttentionSpec,
    VarlenAttentionSpec.kernel: VarlenAttentionSpec,
}


def spec_type(kernel: str) -> type[ProblemSpec]:
    try:
        return SPECS[kernel]
    except KeyError:
        raise ValueError(f"unknown kernel {kernel!r}; known kernels: {', '.join(SPECS)}") from None


def spec_from_dict(kernel: str, data: Mapping[str, Any]) -> ProblemSpec:
    return spec_type(kernel).from_dict(data)
