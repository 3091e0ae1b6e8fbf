"""The prompt advisor: a local instruction-tuned LM asked for configs in JSON.

Any causal-LM checkpoint directory works (``local_files_only=True``: nothing is downloaded). The
prompt states the space (parameters, domains, constraints), the hardware, the problem and the
best configs measured so far, and asks for a JSON list of configs. The answer is parsed
strictly: whatever is not a JSON list of objects over exactly the space's parameters, with
in-domain values that pass the constraints and are new, is rejected with a reason
(``PromptAdvisor.rejections``) and never reaches the tuner. Nothing the model writes can raise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritune.llm_advisor._base import Advisor, Proposal
from tritune.search_space import Hardware, SearchSpace, Value, config_key, device_spec

log = logging.getLogger(__name__)

Generator = Callable[[str], str]


@dataclass(frozen=True)
class Rejection:
    """An answer (or part of one) that was dropped, and why."""

    item: str  # the offending text or JSON item, shortened
    reason: str


def build_prompt(hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace, k: int,
                 measured: Sequence[tuple[Mapping[str, Value], float | None]]) -> str:
    spec = device_spec(hardware.name)
    hw = {"name": hardware.name, "backend": hardware.backend, "compute_capability": hardware.compute_capability,
          "sm_count": hardware.sm_count, "shared_memory_per_block": hardware.smem_per_block}
    if spec is not None:
        hw.update(arch=spec.arch, memory_bandwidth_gbs=spec.mem_bw_gbs, l2_bytes=spec.l2_bytes, warp_size=spec.warp_size)
    params = {p.name: list(p.values) for p in space.params}
    ok = sorted(((c, t) for c, t in measured if t is not None), key=lambda ct: ct[1])[:8]
    failed = [c for c, t in measured if t is None][:4]
    lines = [
        f"You are tuning the GPU kernel '{kernel}' for the problem {json.dumps(dict(problem), default=str)}.",
        f"Hardware: {json.dumps(hw)}.",
        f"Parameters and their allowed values: {json.dumps(params)}.",
        f"Constraints a config must satisfy: {', '.join(c.name for c in space.constraints) or 'none'}.",
    ]
    if ok:
        lines.append("Measured so far (fastest first, time in ms): "
                     + "; ".join(f"{json.dumps(dict(c))} -> {t:.4g}" for c, t in ok) + ".")
    if failed:
        lines.append("These failed: " + "; ".join(json.dumps(dict(c)) for c in failed) + ".")
    lines.append(f"Propose {k} new configs likely to be faster. Answer with only a JSON list of {k} objects, "
                 f"each with exactly the keys {list(space.names)}.")
    return "\n".join(lines)


def parse_answer(text: str, space: SearchSpace, *, exclude: set[str] = frozenset()) -> tuple[list[dict[str, Value]], list[Rejection]]:
    """Strictly parse ``text`` into new valid configs; everything else becomes a Rejection.

    Accepted: a JSON list of objects (or one object), optionally inside one ```json fence.
    """
    rejections: list[Rejection] = []
    body = text.strip()
    if body.startswith("```"):
        inner = body[3:]
        inner = inner[4:] if inner.startswith("json") else inner
        if not inner.rstrip().endswith("```"):
            return [], [Rejection(_short(text), "unterminated ``` fence around the JSON")]
        body = inner.rstrip()[:-3].strip()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        return [], [Rejection(_short(text), f"not JSON: {exc}")]
    items = data if isinstance(data, list) else [data]
    configs: list[dict[str, Value]] = []
    seen = set(exclude)
    for item in items:
        reason, config = _check_item(item, space)
        if config is not None:
            key = config_key(config)
            if key in seen:
                reason, config = ("duplicate: already measured or proposed" if key in exclude
                                  else "duplicate of an earlier config in the answer"), None
            else:
                seen.add(key)
        if config is None:
            rejections.append(Rejection(_short(json.dumps(item, default=str)), reason or "invalid"))
        else:
            configs.append(config)
    return configs, rejections


def _check_item(item: Any, space: SearchSpace) -> tuple[str | None, dict[str, Value] | None]:
    if not isinstance(item, dict):
        return f"expected a JSON object with keys {list(space.names)}, got {type(item).__name__}", None
    config: dict[str, Value] = {}
    problems = []
    for p in space.params:
        if p.name not in item:
            continue
        v = item[p.name]
        match = [d for d in p.values if _same(d, v)]
        if not match:
            problems.append(f"{p.name}={v!r} is outside its domain {list(p.values)}")
        else:
            config[p.name] = match[0]
    missing = [n for n in space.names if n not in item]
    unknown = [k for k in item if k not in space.names]
    if missing:
        problems.append(f"missing parameters {missing}")
    if unknown:
        problems.append(f"unknown parameters {unknown}")
    if problems:
        return "; ".join(problems), None
    reasons = space.validate(config)
    if reasons:
        return "violates constraints: " + "; ".join(reasons), None
    return None, config


def _same(domain_value: Value, answer: Any) -> bool:
    """Strict equality: 64 and 64.0 match, "64" and True do not match 64."""
    if isinstance(domain_value, bool) or isinstance(answer, bool):
        return isinstance(domain_value, bool) and isinstance(answer, bool) and domain_value == answer
    if isinstance(domain_value, int | float):
        return isinstance(answer, int | float) and domain_value == answer
    return isinstance(answer, str) and domain_value == answer


def _short(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


class PromptAdvisor(Advisor):
    """Asks a local instruction-tuned model for configs; keeps only the valid, new ones.

    ``checkpoint``: a local model directory (loaded lazily with ``local_files_only=True``), or
    ``generator``: any ``prompt -> answer text`` callable (tests, remote services). After each
    ``propose`` call, ``rejections`` lists what was dropped and why.
    """

    def __init__(self, checkpoint: str | Path | None = None, *, generator: Generator | None = None,
                 max_new_tokens: int = 384) -> None:
        if (checkpoint is None) == (generator is None):
            raise ValueError("PromptAdvisor needs exactly one of checkpoint= (a local model directory) or generator=")
        if checkpoint is not None and not Path(checkpoint).is_dir():
            raise FileNotFoundError(f"prompt-advisor checkpoint {checkpoint} is not a directory")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.max_new_tokens = max_new_tokens
        self._generator = generator
        self.rejections: list[Rejection] = []
        self.last_answer: str = ""

    def propose(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace, k: int,
                *, measured: Sequence[tuple[Mapping[str, Value], float | None]] = ()) -> list[Proposal]:
        self.rejections = []
        if k <= 0:
            return []
        prompt = build_prompt(hardware, kernel, problem, space, k, measured)
        try:
            answer = self.generator(prompt)
        except Exception as exc:  # noqa: BLE001 -- a broken model must never stop the tuner
            self.rejections.append(Rejection("", f"generation failed: {type(exc).__name__}: {exc}"))
            log.warning("prompt advisor: generation failed: %s", exc)
            return []
        self.last_answer = answer if isinstance(answer, str) else repr(answer)
        if not isinstance(answer, str):
            self.rejections.append(Rejection(_short(self.last_answer), "generator returned no text"))
            return []
        configs, self.rejections = parse_answer(answer, space, exclude={config_key(c) for c, _ in measured})
        for r in self.rejections:
            log.info("prompt advisor: rejected %s: %s", r.item, r.reason)
        # No log-probabilities from a free-text answer: the score is the answer's order.
        return [Proposal(c, -float(i)) for i, c in enumerate(configs[:k])]

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = _load_generator(self.checkpoint, self.max_new_tokens)  # type: ignore[arg-type]
        return self._generator


def _load_generator(directory: Path, max_new_tokens: int) -> Generator:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    model.eval()

    def generate(prompt: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        else:
            text = prompt + "\nAnswer: "
        enc = tokenizer(text, return_tensors="pt")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate
