"""The tensor language: tuning decisions written as sentences of words.

A sentence is ``<bos> HARDWARE <sep> PROBLEM <sep> CONFIG QUALITY``:

- HARDWARE: one word per fixed slot of the device (name, vendor, architecture, compute
  capability, warp size, then log2 buckets of SM count, shared memory, L2, bandwidth, compute).
  The slots are what let the model say something about a GPU it never saw: an unseen device
  keeps the words it shares with known ones (``hw.vendor=amd``, ``hw.bw=2^10``) and gets the
  slot's "unknown" word (``hw.name=?``) for the rest; training drops words to "unknown" at
  random so the model has learnt what they mean.
- PROBLEM: the kernel name and the problem's fields (sizes as log2 buckets, flags and dtypes
  exact; integers <= 0 exact too: they are sentinels such as the serving kernel's unbounded
  window -1, its causal right window 0 and block size 0 for contiguous K/V, not sizes).
- CONFIG: one word per parameter, in the space's parameter order (``c.block_size_x=64``).
- QUALITY: how good the config was on that problem: ``q=0`` (the best half percent) to ``q=5``
  by rank band, ``q=fail`` (failed on the GPU), ``q=any`` (sampled, not measured).

The config comes before its quality, so one model does both jobs of the TLM recipe: its config
words are a generator of configs (fine-tuned on measured configs, most weight on the best ones)
and its last word grades the config it just read (the bands' probabilities give an expected
rank). Grading every config directly trains far better than asking the model for the
band-conditional distribution ``P(config | band)``, which saw each good config a few times.

The vocabulary is word-level and built from the training data and the search spaces, so every
word is a whole decision; a value the vocabulary lacks is spelt as its slot's unknown word.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritune.search_space import Hardware, SearchSpace, Value, device_spec

PAD, BOS, EOS, SEP, UNK = "<pad>", "<bos>", "<eos>", "<sep>", "<unk>"
SPECIALS = (PAD, BOS, EOS, SEP, UNK)

# Quality words, best first: ``q=0`` .. ``q=7`` are rank bands of a problem's measured configs
# (the bands are ``CorpusOptions.quality_cuts``), then failed and unmeasured configs.
LEVELS = tuple(f"q={i}" for i in range(8))
FAIL, ANY = "q=fail", "q=any"
QUALITIES = (*LEVELS, FAIL, ANY)
TOP = LEVELS[0]

# Ten slots: every extra word costs training time on every sentence, and these ten already
# separate the vendors, generations and sizes of the devices in the spec table.
HW_SLOTS = ("name", "vendor", "arch", "cc", "warp", "sm", "smem_block", "l2", "bw", "fp32")
UNKNOWN = "?"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _log2_bucket(x: float | int | None) -> str:
    if x is None or not isinstance(x, int | float) or isinstance(x, bool) or x <= 0:
        return UNKNOWN
    return f"2^{math.floor(math.log2(x))}"


def hardware_words(hw: Hardware) -> list[str]:
    """One word per slot of ``HW_SLOTS``; figures the fingerprint lacks come from the spec table."""
    spec = device_spec(hw.name) if hw.name else None
    vendor = hw.vendor or hw.backend or UNKNOWN  # the interpreter's "vendor" is its backend
    slots: dict[str, str] = {
        "name": spec.name if spec else (hw.name or UNKNOWN),
        "vendor": vendor,
        "arch": spec.arch if spec else UNKNOWN,
        "cc": (spec.compute_capability if spec else hw.compute_capability) or UNKNOWN,
        "warp": str(spec.warp_size) if spec else UNKNOWN,
        "sm": _log2_bucket(hw.sm_count or (spec.sm_count if spec else None)),
        "smem_block": _log2_bucket(hw.smem_per_block or (spec.smem_per_block if spec else None)),
        "l2": _log2_bucket(spec.l2_bytes if spec else None),
        "bw": _log2_bucket(spec.mem_bw_gbs if spec else None),
        "fp32": _log2_bucket(spec.fp32_tflops if spec else None),
    }
    return [f"hw.{s}={slots[s]}" for s in HW_SLOTS]


def problem_words(kernel: str, problem: Mapping[str, Any]) -> list[str]:
    """The kernel word, then one word per problem field (sizes bucketed, the rest exact)."""
    words = [f"kernel={kernel}"]
    for name in sorted(problem):
        words.extend(_field_words(f"p.{name}", problem[name]))
    return words


def _field_words(prefix: str, value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [w for i, v in enumerate(value) for w in _field_words(f"{prefix}.{i}", v)]
    if isinstance(value, Mapping):
        return [w for k in sorted(value) for w in _field_words(f"{prefix}.{k}", value[k])]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0 and float(value).is_integer():
            # A bucket would spell -1 and 0 alike as the unknown word (window_left=-1 means
            # unbounded, window_right=0 causal): a choice, spelt exactly.
            return [f"{prefix}={_fmt(value)}"]
        return [f"{prefix}~{_log2_bucket(value)}"]
    return [f"{prefix}={_fmt(value)}"]


def config_word(name: str, value: Value) -> str:
    return f"c.{name}={_fmt(value)}"


def unknown_word(word: str) -> str:
    """The slot's unknown word: ``hw.sm=2^6`` -> ``hw.sm=?``, ``p.seq_q~2^9`` -> ``p.seq_q=?``."""
    for sep in ("=", "~"):
        if sep in word:
            return word.split(sep, 1)[0] + "=" + UNKNOWN
    return UNK


@dataclass(frozen=True)
class Sentence:
    """The words of one training or query sentence: context, config, quality."""

    context: tuple[str, ...]  # <bos> hardware <sep> problem <sep>
    config: tuple[str, ...]  # one word per parameter
    quality: str = ANY

    @property
    def words(self) -> tuple[str, ...]:
        return (*self.context, *self.config, self.quality)


def sentence(hw: Hardware, kernel: str, problem: Mapping[str, Any], config: Mapping[str, Value] | None,
             names: Sequence[str], quality: str = ANY) -> Sentence:
    """Words for ``config`` (parameters in ``names`` order); ``config`` None gives the context only."""
    if quality not in QUALITIES:
        raise ValueError(f"quality={quality!r} is not one of {QUALITIES}")
    context = (BOS, *hardware_words(hw), SEP, *problem_words(kernel, problem), SEP)
    body = tuple(config_word(n, config[n]) for n in names) if config is not None else ()
    return Sentence(context, body, quality)


class Vocabulary:
    """Word <-> id. Ids are stable once built (saved with the checkpoint as ``vocab.json``)."""

    def __init__(self, words: Iterable[str]) -> None:
        ordered = list(dict.fromkeys([*SPECIALS, *QUALITIES, *words]))
        self.words: list[str] = ordered
        self.ids: dict[str, int] = {w: i for i, w in enumerate(ordered)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.ids

    def id(self, word: str) -> int:
        """The word's id; an unknown word maps to its slot's unknown word, else ``<unk>``."""
        found = self.ids.get(word)
        if found is not None:
            return found
        return self.ids.get(unknown_word(word), self.ids[UNK])

    def encode(self, words: Sequence[str]) -> list[int]:
        return [self.id(w) for w in words]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.words[i] for i in ids]

    def value_ids(self, name: str, values: Sequence[Value]) -> list[int]:
        return [self.id(config_word(name, v)) for v in values]

    def parse_config(self, words: Sequence[str], space: SearchSpace) -> dict[str, Value]:
        """Words -> config values of ``space`` (the inverse of the CONFIG part of ``sentence``).

        Raises ValueError naming the first word that is not a value of the expected parameter.
        """
        out: dict[str, Value] = {}
        body = [w for w in words if w not in (EOS, PAD) and w not in QUALITIES]
        if len(body) != len(space.params):
            raise ValueError(f"expected {len(space.params)} config words for {space.name}, got {len(body)}: {body}")
        for p, w in zip(space.params, body, strict=True):
            lookup = {config_word(p.name, v): v for v in p.values}
            if w not in lookup:
                raise ValueError(f"word {w!r} is not a value of parameter {p.name!r} (domain {list(p.values)})")
            out[p.name] = lookup[w]
        return out

    # --- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        data = json.loads(Path(path).read_text())
        vocab = cls(data["words"])
        if vocab.words != data["words"]:
            raise ValueError(f"vocabulary {path} is malformed (specials missing or repeated words)")
        return vocab

    @classmethod
    def build(cls, sentences: Iterable[Sentence], spaces: Iterable[SearchSpace] = ()) -> Vocabulary:
        """Every word of ``sentences``, every value of ``spaces``, and each slot's unknown word."""
        words: dict[str, None] = {}
        for s in sentences:
            for w in s.words:
                words.setdefault(w, None)
        for space in spaces:
            for p in space.params:
                for v in p.values:
                    words.setdefault(config_word(p.name, v), None)
        for w in list(words):
            if w not in SPECIALS and w not in QUALITIES:
                words.setdefault(unknown_word(w), None)
        return cls(words)
