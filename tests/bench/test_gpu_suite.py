"""The GPU suite's dry mode runs every part on CPU, so the suite cannot rot between GPU loans."""

import json
import tarfile

import pytest
from tritune.bench import gpu_suite
from tritune.bench._suite_parts import LANDSCAPE_GROUPS_DRY, LANDSCAPE_GROUPS_GPU, promote_builtin
from tritune.bench._suite_varlen import CASES_DRY, CASES_GPU
from tritune.kernels import kernel_hash
from tritune.search_space import FlashAttentionSpec, Hardware, Landscape, write_landscape


@pytest.mark.slow
def test_dry_run_covers_every_part_and_resumes(tmp_path):
    out = tmp_path / "suite"
    summary = gpu_suite.run_suite(out, budget_s=600, dry=True, log=lambda m: None)
    assert set(summary) == set(gpu_suite.PARTS)
    for part in gpu_suite.PARTS:
        data = json.loads((out / f"{part}.json").read_text())
        assert data["dry"] is True and data["card"] == "cpu-interpreter"
        assert (out / f"{part}.md").read_text().startswith(f"# {part}:")
    correctness = json.loads((out / "correctness.json").read_text())
    assert correctness["complete"] and correctness["checked"] >= 6 and correctness["failed"] == 0
    kernels = [row[0] for row in correctness["table"]["rows"]]
    assert kernels.count("varlen_attention") >= len(CASES_DRY)  # the serving kernel's mixed batches
    # the serving benchmark ran (dry: one mixed batch, every part, vLLM skipped with its reason)
    varlen = json.loads((out / "bench_varlen_attention.json").read_text())
    assert [b["name"] for b in varlen["batches"]] == ["mixed"]
    assert set(varlen["batches"][0]["parts"]) == {"all", "decode", "prefill"}
    assert any(n.startswith("vllm") for n in varlen["notes"])
    lands = sorted((out / "landscapes").glob("*.json.gz"))
    assert len(lands) == sum(len(g) for g in LANDSCAPE_GROUPS_DRY) == 4
    assert any(p.name.startswith("varlen_attention__") for p in lands)
    for path in lands:
        ls = Landscape.load(path)
        assert ls.raw_meta["tritune"]["real_timing"] is False  # CPU times are marked as such
        assert all(e.status == "ok" for e in ls)
    clients = json.loads((out / "clients.json").read_text())  # transformers models, kernels counted
    assert clients["complete"] and clients["failed"] == 0 and len(clients["table"]["rows"]) == 2
    assert "SUMMARY.md" in {p.name for p in out.iterdir()}
    # a second call finds every part done and redoes nothing
    again = gpu_suite.run_suite(out, budget_s=600, dry=True, log=lambda m: None)
    assert all(r.get("complete") for r in again.values() if r["part"] != "bench")
    # one archive for the device's few-files limit
    archive = gpu_suite.pack(out, tmp_path / "suite.tar.gz")
    with tarfile.open(archive) as tar:
        assert "suite/landscapes.json" in tar.getnames()
    # interpreter landscapes never reach the built-in table
    table = tmp_path / "builtin.json"
    assert promote_builtin(out, table) == 0


def test_promote_takes_the_best_gpu_config(tmp_path):
    hw = Hardware.from_spec("H100", "3.6.0")
    spec = FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", True)
    write_landscape(tmp_path / "runs" / "fa.json.gz", kernel="flash_attention", kernel_name="x", spec=spec.to_dict(),
                    hardware=hw, params={"block_m": (64, 128), "block_n": (64,)},
                    results=[({"block_m": 64, "block_n": 64}, 2.0, None, {}),
                             ({"block_m": 128, "block_n": 64}, 1.5, None, {})],
                    extra={"kernel_hash": kernel_hash("flash_attention"), "real_timing": True, "date": "2026-11-25"})
    table = tmp_path / "builtin.json"
    assert promote_builtin(tmp_path / "runs", table) == 1
    [row] = json.loads(table.read_text())["rows"]
    assert row["config"] == {"block_m": 128, "block_n": 64} and row["time_ms"] == 1.5
    assert row["bucket"] == spec.bucket().key and row["hardware"] == hw.to_dict()
    assert promote_builtin(tmp_path / "runs", table) == 0  # idempotent


def test_landscape_order_is_fixed_and_shared_by_subsets():
    from tritune.bench._suite_parts import landscape_order

    configs = [{"a": a, "b": b} for a in range(6) for b in (1, 2, 4)]
    order = landscape_order(configs)
    assert sorted(map(str, order)) == sorted(map(str, configs)) and order != configs  # shuffled, nothing lost
    assert landscape_order(list(reversed(configs))) == order
    subset = configs[::2]  # a shape whose space is smaller meets the shared configs in the same order
    assert landscape_order(subset) == [c for c in order if c in subset]


def _ctx(out, checks_allowed):
    """A dry SuiteContext whose budget runs out after ``checks_allowed`` deadline checks."""
    calls = {"n": 0}

    class Ctx(gpu_suite.SuiteContext):
        def expired(self, reserve_s=0.0):
            calls["n"] += 1
            return calls["n"] > checks_allowed

    out.mkdir(exist_ok=True)
    return Ctx(out=out, dry=True, deadline=0.0, device="cpu", card="cpu-interpreter", date="2026-11-25")


@pytest.mark.slow
def test_cut_short_landscapes_are_partial_samples_and_a_rerun_completes_them(tmp_path, monkeypatch):
    from tritune.bench import _suite_parts as parts

    monkeypatch.setattr(parts, "ROUND", 2)
    first = parts.landscapes(_ctx(tmp_path, checks_allowed=2))  # two shapes of the first group, 2 configs each
    assert not first["complete"] and first["measured"] == 4
    files = sorted((tmp_path / "landscapes").glob("*.json.gz"))
    assert len(files) == 2
    measured = []
    for f in files:
        ls = Landscape.load(f)
        meta = ls.raw_meta["tritune"]
        assert meta["complete"] is False and meta["measured"] == len(ls) == 2
        assert meta["valid_configs"] == parts.DRY_CONFIGS_PER_SHAPE
        measured.append({json.dumps(e.values, sort_keys=True) for e in ls})
    assert measured[0] == measured[1]  # config-major: one compile serves every shape of the group
    tuning = parts.tuning(_ctx(tmp_path, checks_allowed=10**6))
    assert tuning["complete"] is False and any("partial" in n for n in tuning["notes"])

    again = parts.landscapes(_ctx(tmp_path, checks_allowed=10**6))
    assert again["complete"] and again["measured"] == 4 * parts.DRY_CONFIGS_PER_SHAPE
    for f in sorted((tmp_path / "landscapes").glob("*.json.gz")):
        assert Landscape.load(f).raw_meta["tritune"]["complete"] is True
    lines = (tmp_path / "landscapes" / f"{files[0].name.removesuffix('.json.gz')}.jsonl").read_text().splitlines()
    assert len(lines) == parts.DRY_CONFIGS_PER_SHAPE  # nothing measured twice


def test_tuning_without_landscapes_stays_incomplete(tmp_path):
    from tritune.bench import _suite_parts as parts

    result = parts.tuning(_ctx(tmp_path, checks_allowed=10**6))
    assert result["complete"] is False  # so the rerun after a landscape is recorded comes back to it


def test_continue_from_copies_earlier_measurements_once(tmp_path):
    for run, lines in (("run1", ['{"config": {"a": 1}}\n']), ("run2", ['{"config": {"a": 2}}'])):
        (tmp_path / run / "landscapes").mkdir(parents=True)
        (tmp_path / run / "landscapes" / "fa__h100.jsonl").write_text("".join(lines))
    out = tmp_path / "out"
    assert gpu_suite.continue_from(out, [tmp_path / "run1", tmp_path / "run2"]) == 1
    text = (out / "landscapes" / "fa__h100.jsonl").read_text()
    assert text.splitlines() == ['{"config": {"a": 1}}', '{"config": {"a": 2}}']
    # a warm rerun keeps its own, newer file
    (out / "landscapes" / "fa__h100.jsonl").write_text("newer\n")
    assert gpu_suite.continue_from(out, [tmp_path / "run1"]) == 0
    assert (out / "landscapes" / "fa__h100.jsonl").read_text() == "newer\n"


def test_varlen_gpu_cases_and_landscapes_are_valid_serving_batches():
    """The device-only grid is built here on meta tensors: every case makes a valid spec whose
    default config passes its space's constraints on an H100-class card, and the cases cover
    what the issue owes on the device (mixed rows, GQA/MQA, fp16/bf16, FP8, strided and packed
    caches, windows, softcap, sinks, ALiBi)."""
    from tritune.bench._suite_varlen import build
    from tritune.search_space import default_config, space_for

    hw = Hardware.from_spec("H100")
    seen = set()
    for case in CASES_GPU:
        x, spec = build(case, "meta", 0)
        assert space_for(spec, hw).is_valid(default_config(spec, hw).to_dict()), case.name
        seen |= {f"q{min(case.q_lens)}", f"Q{max(case.q_lens)}", spec.dtype, f"g{spec.group}",
                 "fp8" if case.fp8 else "", "vllm" if case.vllm_layout else "", "packed" if not case.block_size else "",
                 "window" if case.window[0] >= 0 else "", "softcap" if case.softcap else "", "sinks" if case.sinks else "",
                 f"alibi-{case.alibi}" if case.alibi else "", "split" if default_config(spec, hw).num_splits > 1 else ""}
        assert x["q"].shape == (sum(case.q_lens), *case.heads[:1], case.head_dim)
    assert {"q1", "fp16", "bf16", "g1", "g4", "fp8", "vllm", "packed", "window", "softcap", "sinks",
            "alibi-heads", "alibi-batch", "split"} <= seen
    assert any(min(c.q_lens) == 1 and max(c.q_lens) > 8 and any(1 < q <= 8 for q in c.q_lens) for c in CASES_GPU)
    varlen = [spec for group in LANDSCAPE_GROUPS_GPU for spec in group if spec.kernel == "varlen_attention"]
    assert {(s.num_seqs, s.max_seqlen_q) for s in varlen} == {(65, 512), (8, 1)}


def test_the_serving_bench_is_time_bounded_and_uses_the_run_ceilings(tmp_path):
    from tritune.bench._suite_parts import _bench_args

    ctx = gpu_suite.SuiteContext(out=tmp_path, dry=False, deadline=__import__("time").monotonic() + 300,
                                 device="cuda", card="x", date="2026-12-01")
    ctx.results["ceilings"] = {"copy_gbs": 4300.0, "matmul_tflops": 790.0}
    args = _bench_args("varlen_attention", ctx)
    deadline = float(args[args.index("--deadline-s") + 1])
    assert 190 <= deadline <= 210  # starts no batch in the last 90 s of the budget
    assert args[args.index("--copy-gbps") + 1] == "4300.0" and args[args.index("--matmul-tflops") + 1] == "790.00"
    assert "--deadline-s" not in _bench_args("flash_attention", ctx)  # the bound and ceilings are the serving bench's


def test_the_bench_part_summarizes_the_serving_goals(tmp_path):
    from tritune.bench._suite_parts import _varlen_goals

    def batch(vs, dec):
        return {"goals": {"vs_vllm": vs, "decode_vs_paged": dec, "prefill_vs_flash": None,
                          "met": {"vs_vllm": vs >= 1.0, "decode_vs_paged": dec >= 1.0, "prefill_vs_flash": None}}}

    path = tmp_path / "bench_varlen_attention.json"
    path.write_text(json.dumps({"dry": False, "goals": {"vs_vllm": 1.0, "decode_vs_paged": 1.0, "prefill_vs_flash": 0.9},
                                "batches": [batch(1.2, 0.8), batch(0.95, 1.1)]}))
    line = _varlen_goals(path)
    assert line.startswith("varlen_attention: goals met 2/4;") and "vs_vllm 0.95-1.20x (goal 1.0x)" in line


@pytest.mark.slow
def test_live_tunes_time_default_tpe_and_exhaustive_on_a_flash_and_a_decode_shape(tmp_path):
    """The owed criterion's wiring: a dry run times each strategy on one shape of each family
    against its recorded optimum (interpreter trials here; 60 s GPU runs on the device)."""
    from tritune.bench import _suite_parts as parts
    from tritune.search_space import space_for

    hw = Hardware.cpu_interpreter()
    for spec in (LANDSCAPE_GROUPS_DRY[0][0], LANDSCAPE_GROUPS_DRY[1][0]):
        space = space_for(spec, hw)
        write_landscape(tmp_path / "landscapes" / f"{spec.kernel}.json.gz", kernel=spec.kernel,
                        kernel_name=f"tritune_{spec.kernel}", spec=spec.to_dict(), hardware=hw,
                        params={p.name: p.values for p in space.params},
                        # a slow recorded optimum: any measured config holds 98% of it, so each run stops early
                        results=[(c, 1e9, None, {}) for c in space.enumerate()[:4]],
                        extra={"kernel_hash": kernel_hash(spec.kernel), "real_timing": False, "complete": True,
                               "valid_configs": 4})
    result = parts.tuning(_ctx(tmp_path, checks_allowed=10**6))
    live = result["live_tunes"]
    assert sorted(name.split("/")[-1] for name in live["targets"]) == ["flash_attention", "paged_attention"]
    runs = {(r["strategy"], r["kernel"]): r for r in live["runs"]}
    assert set(runs) == {(s, k) for s in parts.LIVE_STRATEGIES for k in ("flash_attention", "paged_attention")}
    for r in runs.values():
        assert r["trials"] >= 1 and r["fraction"] >= parts.LIVE_TARGET and r["passed"], r
        assert r["stopped"] == "stop condition" and r["fraction_98_at_s"] <= r["wall_s"] + 1
    assert runs[("default", "flash_attention")]["strategy_detail"].startswith("cost model")
    assert sum(n.startswith("live ") for n in result["notes"]) == 6 and "problems at 98%" in result["headline"]
    assert parts._previous_live_tunes(_ctx(tmp_path, checks_allowed=1)) is None  # nothing written yet
