import pytest
from tritune.search_space import (
    Bucket,
    FlashAttentionSpec,
    PagedAttentionSpec,
    pow2_ceil,
    spec_type,
)


def test_parse_aliases_and_shortcuts():
    spec = FlashAttentionSpec.parse("B=2,Hq=32,Hkv=8,seq=1000,D=128,dtype=bfloat16,causal=true")
    assert spec == FlashAttentionSpec(2, 32, 8, 1000, 1000, 128, "bf16", True)
    assert FlashAttentionSpec.parse(["batch=1", "heads_q=4", "heads_kv=4", "Sq=1", "Skv=7", "head_dim=80"]).seq_kv == 7


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("B=1,Hq=32,Hkv=7,seq=16,D=64", "multiple of heads_kv"),
        ("B=1,Hq=8,Hkv=8,seq=0,D=64", "seq_q=0 must be a positive integer"),
        ("B=1,Hq=8,Hkv=8,seq=16,D=512", "head_dim=512"),
        ("B=1,Hq=8,Hkv=8,seq=16,D=64,dtype=int8", "dtype='int8'"),
        ("B=1,Hq=8,Hkv=8,seq=16,D=abc", "head_dim='abc' is not an integer"),
        ("B=1,Hq=8,Hkv=8,seq=16", "missing ['head_dim']"),
        ("B=1,Hq=8,Hkv=8,seq=16,D=64,colour=red", "unknown shape key 'colour'"),
        ("B=1,Hq=8,Hkv=8,seq16,D=64", "malformed shape item 'seq16'"),
        ("B=1,Hq=8,Hkv=8,seq=16,D=64,causal=maybe", "not a boolean"),
    ],
)
def test_parse_errors_name_the_field(text, fragment):
    with pytest.raises(ValueError) as info:
        FlashAttentionSpec.parse(text)
    assert fragment in str(info.value)


def test_paged_spec_validation():
    spec = PagedAttentionSpec.parse("S=3,Hq=32,Hkv=8,D=128,ctx=5000,block_size=16")
    assert spec.bucket().scaled == (("num_seqs", 4), ("context_len", 8192))
    with pytest.raises(ValueError, match="block_size=24 must be a power of two"):
        PagedAttentionSpec(1, 8, 8, 64, 10, block_size=24)
    with pytest.raises(ValueError, match="context_len=0"):
        PagedAttentionSpec(1, 8, 8, 64, 0)


def test_bucket_rounds_sizes_and_keeps_code_dims():
    a = FlashAttentionSpec(3, 8, 2, 1000, 1000, 80, "fp16", True)
    b = a.bucket()
    assert dict(b.scaled) == {"batch": 4, "seq_q": 1024, "seq_kv": 1024}
    assert dict(b.exact)["head_dim"] == 80
    assert Bucket.parse(b.key) == b
    assert FlashAttentionSpec.from_bucket(b) == a.representative()
    # Same bucket for every size that rounds to it.
    assert FlashAttentionSpec(4, 8, 2, 513, 1024, 80, "fp16", True).bucket() == b


def test_bucket_distance():
    base = FlashAttentionSpec(1, 8, 8, 1024, 1024, 64).bucket()
    assert base.distance(base) == 0
    assert base.distance(FlashAttentionSpec(1, 8, 8, 4096, 1024, 64).bucket()) == 2
    assert base.distance(FlashAttentionSpec(1, 8, 8, 1024, 1024, 128).bucket()) is None  # other head_dim
    assert base.distance(PagedAttentionSpec(1, 8, 8, 64, 1024).bucket()) is None


def test_flops_count():
    spec = FlashAttentionSpec(2, 4, 4, 128, 128, 64, causal=True)
    assert spec.flops == 4 * 2 * 4 * 128 * 128 * 64 / 2
    assert FlashAttentionSpec(2, 4, 4, 64, 128, 64, causal=True).flops == 4 * 2 * 4 * 64 * 128 * 64


def test_pow2_and_registry():
    assert [pow2_ceil(n) for n in (1, 2, 3, 1000, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]
    with pytest.raises(ValueError, match="unknown kernel 'matmul'"):
        spec_type("matmul")


def test_search_space_has_no_heavy_imports():
    import subprocess
    import sys

    code = "import sys, tritune.search_space; bad = {'torch', 'triton', 'optuna'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
