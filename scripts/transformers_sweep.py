"""Run ``attn_implementation="tritune"`` on a tiny random model of every causal-LM type transformers has.

    python scripts/transformers_sweep.py [--json] [MODEL_TYPE ...]

For each type: the default config shrunk to 2 layers of width 64 (4 heads, 2 KV heads, head dim
16, vocabulary 128), random weights; ``generate()`` of 3 tokens on a batch with one row
left-padded, by an fp32 eager model (the reference), a bf16 eager model (the baseline) and the
bf16 tritune model with the same weights. A line per type: OK / BAD against the bf16 rule
(``tritune.kernels.compare``: within 2x the baseline's error plus slack) on the generated
logits, whether the tokens equal the reference's (once they differ, later logits compare
different contexts: check those types at fp32 with ``--fp32``), and the launches of the flash
and varlen kernels and of the PyTorch fallback. Types whose class does not dispatch through
transformers' AttentionInterface are skipped; ERROR lines name where the exception was raised,
which is mostly the shrunken config (a type whose geometry the generic shrink does not fit),
sometimes tritune. Runs on the CPU through the Triton interpreter; about 5 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import traceback

os.environ.setdefault("TRITON_INTERPRET", "1")

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=128, max_position_embeddings=128, initializer_range=0.05)
ALIASES = {"n_embd": 64, "d_model": 64, "n_layer": 2, "num_layers": 2, "n_layers": 2, "n_head": 4, "num_heads": 4}


def tiny_config(model_type: str):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, value in {**TINY, **ALIASES}.items():
        if hasattr(config, key) or key == "head_dim":
            setattr(config, key, value)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(config, key, None)
        if value is not None and (not isinstance(value, int) or value >= TINY["vocab_size"]):
            setattr(config, key, 1)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[:2]
    return config


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def sweep(model_types, *, fp32: bool = False, seconds: int = 90):
    import torch
    import transformers
    import tritune
    import tritune.kernels.flash_attention as flash_kernel
    import tritune.kernels.varlen_attention as varlen_kernel
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from tritune.integrations import transformers as integration
    from tritune.kernels import compare

    name = tritune.register_transformers()
    seen = {"flash": 0, "varlen": 0, "fallback": 0}

    def counted(key, real):
        def run(*args, **kwargs):
            seen[key] += 1
            return real(*args, **kwargs)
        return run

    flash_kernel.launch = counted("flash", flash_kernel.launch)
    varlen_kernel.launch_varlen = counted("varlen", varlen_kernel.launch_varlen)
    integration._torch_attention = counted("fallback", integration._torch_attention)
    dtype = torch.float32 if fp32 else torch.bfloat16
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 120, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=3, do_sample=False, output_logits=True,
                  return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    signal.signal(signal.SIGALRM, _alarm)
    for model_type in model_types or sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        row = {"model_type": model_type}
        signal.alarm(seconds)
        try:
            cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, ""), None)
            if cls is None or not getattr(cls, "_supports_attention_backend", False):
                row["status"] = "skip"
                yield row
                continue
            config = tiny_config(model_type)
            torch.manual_seed(0)
            ref = cls._from_config(copy.deepcopy(config), attn_implementation="eager", dtype=torch.float32).eval()

            def build(attn, cls=cls, config=config, ref=ref):
                torch.manual_seed(0)
                model = cls._from_config(copy.deepcopy(config), attn_implementation=attn, dtype=torch.float32)
                model.load_state_dict(ref.state_dict())
                return model.to(dtype).eval()

            base, model = build("eager"), build(name)
            with torch.no_grad():
                seen.update(flash=0, varlen=0, fallback=0)
                out = model.generate(ids, **kwargs)
                row["launches"] = dict(seen)
                expected = ref.generate(ids, **kwargs)
                baseline = base.generate(ids, **kwargs)
            verdict = compare(torch.stack(out.logits, 1).to(dtype), torch.stack(expected.logits, 1),
                              torch.stack(baseline.logits, 1).float())
            row.update(status="OK" if verdict.ok else "BAD", error=verdict.error, allowed=verdict.allowed,
                       same_tokens=bool(torch.equal(out.sequences, expected.sequences)))
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_types", nargs="*", help="transformers model types (default: every causal LM)")
    parser.add_argument("--fp32", action="store_true", help="run the baseline and tritune models in fp32")
    parser.add_argument("--seconds", type=int, default=90, help="time limit per model type")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    counts: dict[str, int] = {}
    for row in sweep(args.model_types, fp32=args.fp32, seconds=args.seconds):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if args.json:
            print(json.dumps(row), flush=True)
        elif row["status"] in ("OK", "BAD"):
            print(f"{row['model_type']:26s} {row['status']:4s} err={row['error']:.4f} allowed={row['allowed']:.4f} "
                  f"same_tokens={row['same_tokens']} launches={row['launches']}", flush=True)
        else:
            print(f"{row['model_type']:26s} {row['status']:4s} {row.get('error', '')} {row.get('where', '')}", flush=True)
    print("# " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 1 if counts.get("BAD") else 0


if __name__ == "__main__":
    sys.exit(main())
