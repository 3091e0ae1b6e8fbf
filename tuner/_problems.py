"""What to tune: problems from shapes, named presets, transformers model configs and landscapes.

Serving problems are ``varlen_attention`` batches of a serving engine's steps (decode rows, a
chunked-prefill chunk among them, speculative rows) over a paged cache with page size 16.

A kernel problem is tuned on its bucket's representative shape (sizes rounded up to the bucket's
powers of two) and stored under the bucket key, so the config serves every shape in the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritune.search_space import Hardware, Landscape, ProblemSpec
from tritune.tuner._backend import Problem
from tritune.tuner._replay import landscape_problem


@dataclass(frozen=True)
class Preset:
    """A named list of problems with a default budget, for one kind of device."""

    name: str
    description: str
    device: str  # "cpu" (Triton interpreter) or "gpu"
    problems: tuple[tuple[str, str], ...]  # (kernel, shape as key=value,...)
    budget: int  # real evaluations per problem


def _llm(name: str, model: str, hq: int, hkv: int, d: int, budget: int = 60) -> Preset:
    prefill = tuple(("flash_attention", f"B=1,Hq={hq},Hkv={hkv},seq={s},D={d},dtype=bf16,causal=1")
                    for s in (1024, 4096))
    decode = tuple(("paged_attention", f"S={s},Hq={hq},Hkv={hkv},D={d},ctx=4096,block_size=16,dtype=bf16")
                   for s in (1, 32))
    return Preset(name, f"{model}: causal prefill at 1k and 4k tokens, decode of 1 and 32 sequences at 4k context "
                  f"(Hq={hq}, Hkv={hkv}, D={d}, bf16)", "gpu", prefill + decode, budget)


# (what, num_seqs, total_q, max_seqlen_q): the serving steps tuned for a model, at SERVING_CONTEXT keys.
SERVING_BATCHES = (
    ("64 decode rows + a 512-token chunk", 65, 64 + 512, 512),
    ("decode of 8 sequences", 8, 8, 1),
    ("decode of 64 sequences", 64, 64, 1),
    ("8 rows of 4 speculative tokens", 8, 32, 4),
)
SERVING_CONTEXT = 4096
SERVING_PAGE = 16


def serving_shapes(hq: int, hkv: int, d: int, dtype: str = "bf16", *, window_left: int = -1, softcap: bool = False,
                   sinks: bool = False, context: int = SERVING_CONTEXT, block_size: int = SERVING_PAGE
                   ) -> tuple[tuple[str, str], ...]:
    """``varlen_attention`` problems of ``SERVING_BATCHES`` for a model's attention layers: causal,
    ``window_left`` as the runtime keys it (a model's sliding_window - 1), softcap/sinks flags."""
    common = (f"Hq={hq},Hkv={hkv},D={d},block_size={block_size},dtype={dtype},causal=1,left={window_left},"
              f"softcap={int(softcap)},sinks={int(sinks)}")
    return tuple(("varlen_attention", f"S={s},T={t},Sq={q},ctx={context},{common}") for _, s, t, q in SERVING_BATCHES)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("cpu-small", "one small causal prefill and one small decode for the Triton interpreter on CPU "
           "(a couple of minutes on two cores; CPU timings are not GPU timings)", "cpu",
           (("flash_attention", "B=1,Hq=2,Hkv=1,seq=64,D=32,dtype=fp16,causal=1"),
            ("paged_attention", "S=2,Hq=2,Hkv=1,D=32,ctx=64,block_size=16,dtype=fp16")), 20),
    _llm("llama3-8b", "Llama 3 8B / Mistral 7B", 32, 8, 128),
    _llm("llama3-70b", "Llama 3 70B", 64, 8, 128),
    _llm("qwen2.5-7b", "Qwen2.5 7B", 28, 4, 128),
    _llm("gemma2-9b", "Gemma 2 9B", 16, 8, 256),
    Preset("gpu-quick", "one causal prefill (Hq=32, Hkv=8, D=128, 4k tokens, bf16): the 60-second check", "gpu",
           (("flash_attention", "B=1,Hq=32,Hkv=8,seq=4096,D=128,dtype=bf16,causal=1"),), 40),
    Preset("serving", "Llama 3 8B serving steps (varlen_attention, Hq=32, Hkv=8, D=128, bf16, page 16, 4k context): "
           "64 decode rows + a 512-token chunk, decode of 8 and of 64 sequences, 8 rows of 4 speculative tokens",
           "gpu", serving_shapes(32, 8, 128), 60),
)}
DEFAULT_CPU_PRESET = "cpu-small"
DEFAULT_GPU_PRESET = "llama3-8b"


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def available_kernels(kernels: Iterable[str]) -> list[str]:
    """The kernels whose family module exists in this installation."""
    import importlib.util

    from tritune.kernels import family_ref

    out = []
    for k in kernels:
        try:
            module = family_ref(k)[1]
        except ValueError:
            continue
        if importlib.util.find_spec(module) is not None:
            out.append(k)
    return out


def kernel_problem(kernel: str, spec: ProblemSpec, hardware: Hardware) -> Problem:
    """The problem of tuning ``spec``'s bucket on ``hardware`` (on the representative shape)."""
    from tritune.kernels import get_family, kernel_hash

    family = get_family(kernel)
    rep = spec.representative()
    return Problem(kernel=kernel, space=family.space(rep, hardware), hardware=hardware, bucket=spec.bucket().key,
                   spec=rep, kernel_hash=kernel_hash(kernel), label=short_label(kernel, rep))


def short_label(kernel: str, spec: ProblemSpec) -> str:
    """``flash_attention B=1 Hq=32 Hkv=8 Sq=4096 Skv=4096 D=128 bf16 causal``: the CLI's short keys."""
    short = {"batch": "B", "heads_q": "Hq", "heads_kv": "Hkv", "seq_q": "Sq", "seq_kv": "Skv", "head_dim": "D",
             "num_seqs": "S", "context_len": "ctx", "block_size": "page"}
    parts = []
    for name, value in spec.to_dict().items():
        if name == "dtype":
            parts.append(str(value))
        elif isinstance(value, bool):
            if value:
                parts.append(name)
        else:
            parts.append(f"{short.get(name, name)}={value}")
    return f"{kernel} {' '.join(parts)}"


def parse_shape(kernel: str, text: str | Sequence[str]) -> ProblemSpec:
    """A spec of ``kernel`` from ``key=value`` items (the family's spec type, aliases allowed)."""
    from tritune.kernels import get_family

    return get_family(kernel).spec_type.parse(text)


def preset_specs(name: str) -> list[tuple[str, ProblemSpec]]:
    p = preset(name)
    kernels = set(available_kernels({k for k, _ in p.problems}))
    return [(k, parse_shape(k, shape)) for k, shape in p.problems if k in kernels]


def model_config_specs(path: str | Path, *, prefill_seqs: Sequence[int] = (1024, 4096),
                       decode_seqs: Sequence[int] = (1, 32), context: int = 4096,
                       include: Sequence[str] = ("prefill", "decode", "serving")) -> list[tuple[str, ProblemSpec]]:
    """Problems for a transformers ``config.json``: prefill (flash_attention) and decode
    (paged_attention) for its heads, KV heads and head dim, and serving steps (varlen_attention,
    ``SERVING_BATCHES``) for each kind of attention layer it has (sliding window / full,
    ``attn_logit_softcapping``, gpt-oss sinks); ``include`` picks the kinds."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        cfg: Mapping[str, Any] = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"--model-config {path}: file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--model-config {path} is not a JSON config file: {exc}") from None
    if "num_attention_heads" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        cfg = cfg["text_config"]  # multimodal configs nest the language model's
    try:
        hq = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"--model-config {path} has no num_attention_heads; is it a transformers config.json?") from None
    hkv = int(cfg.get("num_key_value_heads") or hq)
    d = cfg.get("head_dim")
    if d is None:
        if "hidden_size" not in cfg:
            raise ValueError(f"--model-config {path} has neither head_dim nor hidden_size")
        d = int(cfg["hidden_size"]) // hq
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
    if dtype not in ("float16", "bfloat16", "float32"):
        dtype = "bfloat16"
    out: list[tuple[str, ProblemSpec]] = []
    kernels = set(available_kernels(["flash_attention", "paged_attention", "varlen_attention"]))
    if "flash_attention" in kernels and "prefill" in include:
        out += [("flash_attention", parse_shape("flash_attention", f"B=1,Hq={hq},Hkv={hkv},seq={s},D={d},dtype={dtype},causal=1"))
                for s in prefill_seqs]
    if "paged_attention" in kernels and "decode" in include:
        out += [("paged_attention", parse_shape(
            "paged_attention", f"S={s},Hq={hq},Hkv={hkv},D={d},ctx={context},block_size=16,dtype={dtype}"))
            for s in decode_seqs]
    if "varlen_attention" in kernels and "serving" in include:
        serving_dtype = dtype if dtype != "float32" else "bfloat16"  # the serving kernel runs fp16/bf16
        for left, softcap, sinks in layer_kinds(cfg, path):
            out += [(k, parse_shape(k, shape)) for k, shape in serving_shapes(
                hq, hkv, d, serving_dtype, window_left=left, softcap=softcap, sinks=sinks, context=context)]
    return out


# Models whose configs may omit layer_types although their layers alternate sliding and full.
_ALTERNATING = ("gemma2", "gemma3", "gemma3_text", "cohere2", "gpt_oss")


def layer_kinds(cfg: Mapping[str, Any], path: str | Path = "config") -> list[tuple[int, bool, bool]]:
    """(window_left, softcap, sinks) of each kind of attention layer in a transformers config.

    ``sliding_window`` W (unless ``use_sliding_window`` is false, as Qwen2 ships it) is a left
    window of W - 1, the edge transformers and vLLM hand the kernel; models whose ``layer_types``
    mix "sliding_attention" and "full_attention" (Gemma 2/3, gpt-oss) get both kinds, a model
    without ``layer_types`` (Mistral) the window on every layer. ``attn_logit_softcapping``
    (Gemma 2) and gpt-oss's sinks hold on every layer.
    """
    window = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ValueError(f"--model-config {path}: sliding_window={window!r} is not a positive integer (or null)")
    cap = cfg.get("attn_logit_softcapping")
    softcap = isinstance(cap, int | float) and not isinstance(cap, bool) and cap > 0
    sinks = cfg.get("model_type") == "gpt_oss"
    types = cfg.get("layer_types")
    types = set(types) if isinstance(types, list | tuple) else set()
    if window is None:
        return [(-1, softcap, sinks)]
    if "full_attention" in types or (not types and cfg.get("model_type") in _ALTERNATING):
        return [(window - 1, softcap, sinks), (-1, softcap, sinks)]
    return [(window - 1, softcap, sinks)]


def landscape_problems(paths: Iterable[str | Path]) -> tuple[list[Problem], list[Landscape]]:
    from tritune.search_space import load_landscapes

    landscapes = load_landscapes(paths)
    return [landscape_problem(ls) for ls in landscapes], landscapes


def dedupe(problems: Iterable[Problem]) -> list[Problem]:
    """One problem per (hardware, kernel, bucket): shapes of one bucket are tuned once."""
    seen: dict[tuple[str, str, str], Problem] = {}
    for p in problems:
        seen.setdefault((p.hardware.key, p.kernel, p.bucket), p)
    return list(seen.values())
