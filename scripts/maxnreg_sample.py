"""Compile a sample of maxnreg=128 FlashAttention configs capped and uncapped (no GPU needed).

Writes one JSON line per config: the register count and stack bytes with and without the cap,
for sm_80 and sm_90 on the installed Triton. This is the data behind the maxnreg rule in
search_space/flash_attention.py (data/compile_tier/maxnreg128_triton39.jsonl came from seeds 1
and 2, 12 configs per shape and arch each).

    python scripts/maxnreg_sample.py OUT.jsonl SEED N_PER_SHAPE
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time


def main(out_path: str, seed: int, n: int) -> None:
    from tritune.kernels.flash_attention import FAMILY
    from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec, Hardware, space_for
    from tritune.search_space.flash_attention import registers_per_thread

    specs = {"D64": FlashAttentionSpec(4, 32, 32, 4096, 4096, 64, "bf16", False),
             "D128": FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", False),
             "D128c": FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", True)}
    rng = random.Random(seed)
    with open(out_path, "a") as out:
        for arch, device in ((80, "A100"), (90, "H100")):
            for name, spec in specs.items():
                space = space_for(spec, Hardware.from_spec(device))
                combos = list(itertools.product(*(p.values for p in space.params)))
                rng.shuffle(combos)
                got = 0
                for combo in combos:
                    values = dict(zip(space.names, combo, strict=True))
                    if values["maxnreg"] != 128 or values["warp_specialize"]:
                        continue
                    reasons = space.validate(values)
                    if any(not r.startswith("maxnreg") for r in reasons):
                        continue  # invalid for another reason: not a question about the cap
                    config = FlashAttentionConfig.from_dict(values)
                    t0 = time.time()
                    capped = FAMILY.compile(spec, config, arch)
                    uncapped = FAMILY.compile(spec, config.replace(maxnreg=0), arch)
                    out.write(json.dumps({
                        "arch": arch, "spec": name, "cfg": config.key(),
                        "values": {k: int(v) if isinstance(v, bool) else v for k, v in values.items()},
                        "est": registers_per_thread(spec, values), "rule": reasons[0] if reasons else "",
                        "cap_ok": capped.ok, "cap_regs": capped.registers, "cap_stack": capped.stack_bytes,
                        "unc_ok": uncapped.ok, "unc_regs": uncapped.registers, "unc_stack": uncapped.stack_bytes,
                        "s": round(time.time() - t0, 1)}) + "\n")
                    out.flush()
                    got += 1
                    if got >= n:
                        break


if __name__ == "__main__":  # compile workers are spawned: keep the work under the guard
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
