"""Run ``attn_implementation="tritune"`` on a tiny random model of every type of one transformers task.

    python scripts/transformers_sweep.py [--task causal-lm|seq2seq|masked-lm|classify|image]
        [--fp32] [--cache static] [--json] [MODEL_TYPE ...]

For each type: the default config (and each of its sub-configs) shrunk to 2 layers of width 64
(4 heads, 2 KV heads, head dim 16, vocabulary 128, 32x32 images of 8x8 patches), random weights;
then, by an fp32 eager model (the reference), a bf16 eager model (the baseline) and the bf16
tritune model with the same weights:

- ``causal-lm`` (default) and ``seq2seq``: ``generate()`` of 3 tokens on a batch of two token
  rows, one padded (left for decoders, right for encoders), compared on the generated logits;
- ``masked-lm`` and ``classify`` (sequence classification: encoders and decoders with a
  classification head): one forward of that batch, compared on the logits;
- ``image`` (image classification): one forward of two random images, compared on the logits.

A line per type: OK / BAD against the bf16 rule (``tritune.kernels.compare``: within 2x the
baseline's error plus slack), for generation whether the tokens equal the reference's (once
they differ, later logits compare different contexts: check those types at fp32 with
``--fp32``), and the launches of the flash and varlen kernels and of the PyTorch fallback.
NO-INTERFACE: transformers refused the custom implementation (the type's attention does not go
through its AttentionInterface); INPUTS: the type takes inputs the sweep does not build (audio,
video); ERROR lines name where the exception was raised, which is mostly the shrunken config (a
type whose geometry the generic shrink does not fit), sometimes tritune. Runs on the CPU through
the Triton interpreter; about 8 minutes for the causal LMs, 2-4 for each other task.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback

os.environ.setdefault("TRITON_INTERPRET", "1")

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=128, max_position_embeddings=128, initializer_range=0.05)
ALIASES = {"n_embd": 64, "d_model": 64, "n_layer": 2, "num_layers": 2, "n_layers": 2, "n_head": 4, "num_heads": 4,
           "encoder_layers": 2, "decoder_layers": 2, "num_decoder_layers": 2, "encoder_attention_heads": 4,
           "decoder_attention_heads": 4, "encoder_ffn_dim": 96, "decoder_ffn_dim": 96, "d_ff": 96, "d_kv": 16,
           "image_size": 32, "patch_size": 8, "num_channels": 3}
# The mapping of each task's model classes, by model type, in transformers.models.auto.modeling_auto.
TASKS = {"causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
         "masked-lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "classify": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
         "image": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"}


def _settable(config, key: str) -> bool:
    """Not a read-only property (Falcon's head_dim, Jamba's layer_types are derived from others)."""
    attr = getattr(type(config), key, None)
    return not (isinstance(attr, property) and attr.fset is None)


def _shrink(config) -> None:
    for key, value in {**TINY, **ALIASES}.items():
        if (hasattr(config, key) or key == "head_dim") and _settable(config, key):
            setattr(config, key, value)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        value = getattr(config, key, None)
        if value is not None and (not isinstance(value, int) or value >= TINY["vocab_size"]):
            setattr(config, key, 1)
    if getattr(config, "is_encoder_decoder", False) and getattr(config, "decoder_start_token_id", None) is None:
        pad = getattr(config, "pad_token_id", None)  # T5 starts its decoder with the pad token
        config.decoder_start_token_id = pad if isinstance(pad, int) else 1
    if getattr(config, "layer_types", None) is not None and _settable(config, "layer_types"):
        config.layer_types = list(config.layer_types)[:2]
    if hasattr(config, "qk_rope_head_dim"):  # latent attention: rope part, rest, values, ranks
        for key, value in dict(qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, kv_lora_rank=32,
                               q_lora_rank=32, head_dim=8, qk_head_dim=24, num_key_value_heads=4,
                               index_head_dim=16, index_n_heads=4, index_topk=4).items():
            if hasattr(config, key):
                setattr(config, key, value)
    if getattr(config, "rotary_dim", None) is not None:
        config.rotary_dim = 8
    for name in getattr(config, "sub_configs", {}):
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            _shrink(sub)


def tiny_config(model_type: str, task: str = "causal-lm"):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    if task == "causal-lm" and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    _shrink(config)
    if task == "classify":
        config.num_labels = 3
        config.pad_token_id = 0  # decoders classify at each row's last non-pad token
    return config


def _inputs(model, task: str, ids, mask, dtype):
    """The batch for one model: the task's token rows, or two random images."""
    import torch

    if task == "image":
        if model.main_input_name != "pixel_values":
            return None
        vision = getattr(model.config, "vision_config", model.config)
        size, channels = getattr(vision, "image_size", 32), getattr(vision, "num_channels", 3)
        size = size[0] if isinstance(size, list | tuple) else size
        g = torch.Generator().manual_seed(2)
        return {"pixel_values": torch.randn(2, channels, size, size, generator=g).to(dtype)}
    if model.main_input_name != "input_ids":
        return None
    if task == "seq2seq":
        mask = mask.flip(1)  # encoders take right padding
    return {"input_ids": ids, "attention_mask": mask}


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def sweep(model_types, *, task: str = "causal-lm", fp32: bool = False, seconds: int = 90, cache: str | None = None):
    import torch
    import transformers
    import tritune
    from transformers.models.auto import modeling_auto
    from tritune.bench._suite_clients import build, counting_launches
    from tritune.kernels import compare

    name = tritune.register_transformers()
    dtype = torch.float32 if fp32 else torch.bfloat16
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 120, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    generate = task in ("causal-lm", "seq2seq")
    kwargs = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True,
                  pad_token_id=0, eos_token_id=None) if generate else {}
    if cache and generate:
        kwargs["cache_implementation"] = cache
    classes = getattr(modeling_auto, TASKS[task])
    signal.signal(signal.SIGALRM, _alarm)
    for model_type in model_types or sorted(classes):
        row = {"model_type": model_type}
        signal.alarm(seconds)
        try:
            names = classes.get(model_type, "")
            cls = getattr(transformers, names if isinstance(names, str) else names[0], None)
            if cls is None:
                row["status"] = "skip"
                yield row
                continue
            config = tiny_config(model_type, task)
            ref = build(cls, config, "eager", torch.float32)
            try:
                model = build(cls, config, name, dtype, ref.state_dict())
            except KeyError as exc:
                if name not in str(exc):
                    raise
                row["status"] = "NO-INTERFACE"
                yield row
                continue
            base = build(cls, config, "eager", dtype, ref.state_dict())
            batch = _inputs(model, task, ids, mask, dtype)
            if batch is None:
                row.update(status="INPUTS", error=f"main input {model.main_input_name}")
                yield row
                continue
            with torch.no_grad():
                with counting_launches() as seen:
                    out = _run(model, batch, kwargs, generate)
                row["launches"] = dict(seen)
                expected = _run(ref, {k: v.float() if v.is_floating_point() else v for k, v in batch.items()},
                                kwargs, generate)
                baseline = _run(base, batch, kwargs, generate)
            verdict = compare(out[0].to(dtype), expected[0], baseline[0].float())
            row.update(status="OK" if verdict.ok else "BAD", error=verdict.error, allowed=verdict.allowed)
            if generate:
                row["same_tokens"] = bool(torch.equal(out[1], expected[1]))
        except _Timeout:
            row["status"] = "TIMEOUT"
        except Exception as exc:  # noqa: BLE001 -- a sweep reports every failure and goes on
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "tritune" in f.filename]
            where = (ours or frames)[-1]
            row.update(status="ERROR", error=f"{type(exc).__name__}: {str(exc)[:160]}",
                       where=f"{os.path.basename(where.filename)}:{where.lineno}", in_tritune=bool(ours))
        finally:
            signal.alarm(0)
        yield row


def _run(model, batch, kwargs, generate: bool):
    """(logits, generated tokens or None) of one model on one batch."""
    import torch

    if generate:
        out = model.generate(**batch, **kwargs)
        return torch.stack(out.logits, 1), out.sequences
    return model(**batch).logits, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_types", nargs="*", help="transformers model types (default: every one of the task)")
    parser.add_argument("--task", choices=sorted(TASKS), default="causal-lm",
                        help="which models, and how they run (default: causal-lm, generate())")
    parser.add_argument("--fp32", action="store_true", help="run the baseline and tritune models in fp32")
    parser.add_argument("--cache", metavar="IMPL", help="generate() with this cache_implementation (e.g. static)")
    parser.add_argument("--seconds", type=int, default=90, help="time limit per model type")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    counts: dict[str, int] = {}
    for row in sweep(args.model_types, task=args.task, fp32=args.fp32, seconds=args.seconds, cache=args.cache):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if args.json:
            print(json.dumps(row), flush=True)
        elif row["status"] in ("OK", "BAD"):
            tokens = f" same_tokens={row['same_tokens']}" if "same_tokens" in row else ""
            print(f"{row['model_type']:26s} {row['status']:4s} err={row['error']:.4f} allowed={row['allowed']:.4f}"
                  f"{tokens} launches={row['launches']}", flush=True)
        else:
            print(f"{row['model_type']:26s} {row['status']:4s} {row.get('error', '')} {row.get('where', '')}", flush=True)
    print("# " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 1 if counts.get("BAD") else 0


if __name__ == "__main__":
    sys.exit(main())
