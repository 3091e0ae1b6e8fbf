"""The ``TRITUNE`` vLLM attention backend: vLLM's paged serving step on ``tritune.varlen_attention``.

Follows vLLM 0.33's interfaces (``vllm.v1.attention.backend``) the way its own ``TRITON_ATTN``
backend uses them:

- the per-layer KV cache is vLLM's logical ``[num_blocks, Hkv, block_size, 2*D]`` tensor in
  whatever physical order vLLM allocated; K and V are strided ``[num_blocks, block_size, Hkv,
  D]`` views of it, which the tuned kernel reads as they are (no copy);
- vLLM writes the new K/V before attention (``forward_includes_kv_cache_update = False``):
  :meth:`TrituneAttentionImpl.do_kv_cache_update` stores them through ``slot_mapping``;
- :meth:`TrituneAttentionImpl.forward` runs the whole ragged step (decode rows, speculative
  rows, chunked-prefill chunks over cached prefixes) in one tuned launch, bottom-right causal
  per sequence, with the layer's sliding window, soft-cap, ALiBi slopes and sinks;
- the config comes from tritune's runtime table, keyed by host values only (number of
  sequences, tokens, ``max_query_len``, ``max_seq_len``): no device sync, no database read and
  no tuning on the hot path. CUDA graphs: full graphs only for uniform decode batches
  (``UNIFORM_BATCH``), captured with vLLM's ``max_seq_len`` upper bound, which chooses the
  config but never changes the result.

What the kernel cannot do is refused when vLLM selects the backend (``validate_configuration``
reasons, each naming the option) and again when a layer builds its implementation (ValueError
naming the argument): never computed wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from tritune._varlen_op import varlen_attention
from tritune.integrations.vllm import NAME
from tritune.integrations.vllm._kv_write import write_kv_cache
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionCGSupport,
    AttentionImpl,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
    MultipleOf,
)

# Head dims the varlen kernel is verified on (tests/kernels/test_varlen_attention.py's grid).
HEAD_SIZES = (64, 80, 96, 128, 192, 256)
# vLLM cache dtypes the backend takes: the model's own dtype. FP8 caches ("fp8", "fp8_e4m3")
# are refused for now: the kernel reads e4m3 with descales, but the e4m3 rounding of the cache
# write cannot be checked under the interpreter (it rounds some values to the wrong binade).
KV_CACHE_DTYPES = ("auto", "float16", "bfloat16")
_TORCH_DTYPE = {"float16": torch.float16, "bfloat16": torch.bfloat16}
MIN_CAPABILITY = 80  # bf16 and the kernel's tl.dot tiles: Ampere and newer


@dataclass
class TrituneAttentionMetadata:
    """Per-step metadata: vLLM's batch description as the kernel takes it (device tensors as vLLM
    built them, sizes as host ints)."""

    num_actual_tokens: int  # tokens of real requests (the rest of query/output is padding)
    num_reqs: int
    max_query_len: int  # host upper bound of any request's new tokens
    max_seq_len: int  # host upper bound of any request's keys (cached + new)
    query_start_loc: torch.Tensor  # int32 [num_reqs + 1]
    seq_lens: torch.Tensor  # int32 [num_reqs]: keys per request, new tokens included
    block_table: torch.Tensor  # int32 [num_reqs, max_blocks]
    slot_mapping: torch.Tensor  # int64 [num_tokens]


class TrituneMetadataBuilder(AttentionMetadataBuilder[TrituneAttentionMetadata]):
    """Builds :class:`TrituneAttentionMetadata` from vLLM's ``CommonAttentionMetadata``.

    Nothing is reordered or split: the kernel takes decode, speculative and prefill rows in any
    order in one launch. Full CUDA graphs are offered for uniform batches only (every request
    with the same query length: decode, or verification with ``1 + num_speculative_tokens``).
    """

    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.UNIFORM_BATCH

    def __init__(self, kv_cache_spec: Any, layer_names: list[str], vllm_config: Any, device: torch.device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.block_size = kv_cache_spec.block_size

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> TrituneAttentionMetadata:
        m = common_attn_metadata
        if not (isinstance(m.causal, bool) and m.causal):
            raise ValueError(f"common_attn_metadata.causal={m.causal!r}: the TRITUNE backend runs causal "
                             "decoder attention only (non-causal and per-request causal flags are refused)")
        for option in ("mm_req_doc_ranges", "rswa_prefix_lens"):
            if getattr(m, option, None) is not None:
                raise ValueError(f"common_attn_metadata.{option} is set: the TRITUNE backend does not support it")
        return TrituneAttentionMetadata(
            num_actual_tokens=m.num_actual_tokens, num_reqs=m.num_reqs, max_query_len=m.max_query_len,
            max_seq_len=m.max_seq_len, query_start_loc=m.query_start_loc, seq_lens=m.seq_lens,
            block_table=m.block_table_tensor, slot_mapping=m.slot_mapping)

    def build_for_cudagraph_capture(self, common_attn_metadata: CommonAttentionMetadata) -> TrituneAttentionMetadata:
        metadata = self.build(0, common_attn_metadata)
        # As TRITON_ATTN: capture over 1-key sequences (the kernel's work is data dependent,
        # the captured launch is not); max_seq_len stays vLLM's bound and picks the config.
        metadata.seq_lens.fill_(1)
        return metadata

    def update_draft_decode_metadata(self, metadata: TrituneAttentionMetadata) -> None:
        # Every field references vLLM's persistent buffers: nothing to refresh.
        return None


class TrituneAttentionBackend(AttentionBackend):
    """vLLM attention backend ``TRITUNE``: tritune's tuned varlen kernel over vLLM's paged cache."""

    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16]
    supported_kv_cache_dtypes: ClassVar[list[Any]] = list(KV_CACHE_DTYPES)
    forward_includes_kv_cache_update: bool = False

    @staticmethod
    def get_name() -> str:
        return NAME

    @staticmethod
    def get_impl_cls() -> type[TrituneAttentionImpl]:
        return TrituneAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[TrituneMetadataBuilder]:
        return TrituneMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec: Any = None) -> list[int | MultipleOf]:
        return [MultipleOf(16)]

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return list(HEAD_SIZES)

    @classmethod
    def supports_sliding_window(cls) -> bool:
        return True

    @classmethod
    def supports_sink(cls) -> bool:
        return True

    @classmethod
    def supports_compute_capability(cls, capability: Any) -> bool:
        return capability.to_int() >= MIN_CAPABILITY

    @classmethod
    def supports_combination(cls, head_size: int, dtype: torch.dtype, kv_cache_dtype: Any, block_size: int | None,
                             use_mla: bool, has_sink: bool, use_sparse: bool, use_mm_prefix: bool,
                             device_capability: Any) -> str | None:
        return combination_problem(dtype, kv_cache_dtype, device_capability)


def combination_problem(dtype: torch.dtype, kv_cache_dtype: str | None, device_capability: Any = None) -> str | None:
    """Why this (model dtype, cache dtype) pair cannot run on the kernel, or None."""
    cache = _TORCH_DTYPE.get(kv_cache_dtype or "auto")
    if cache is not None and cache != dtype:
        return (f"kv_cache_dtype={kv_cache_dtype} with dtype={dtype}: the TRITUNE backend keeps the cache in the "
                "model's dtype (use --kv-cache-dtype auto)")
    return None


class TrituneAttentionImpl(AttentionImpl[TrituneAttentionMetadata]):
    """One attention layer on the TRITUNE backend: cache write and attention of a serving step."""

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int | None = None,
                 alibi_slopes: list[float] | None = None, sliding_window: int | None = None,
                 kv_cache_dtype: str = "auto", logits_soft_cap: float | None = None,
                 attn_type: str = AttentionType.DECODER, kv_sharing_target_layer_name: str | None = None,
                 sinks: torch.Tensor | None = None, **extra: Any) -> None:
        refuse_unsupported(head_size=head_size, kv_cache_dtype=kv_cache_dtype, attn_type=attn_type, extra=extra)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        if alibi_slopes is not None and (logits_soft_cap or sinks is not None):
            # Each alone matches vLLM's TRITON_ATTN; together they did not (tests/vllm_backend): the
            # kernel's ALiBi term is flash-attn's -slope*|i - j|, vLLM's differs from it by a
            # per-row constant, which only softmax without sinks or capping ignores.
            raise ValueError("alibi_slopes together with logits_soft_cap or sinks is not supported by the "
                             "TRITUNE backend")
        if sinks is not None and tuple(sinks.shape) != (num_heads,):
            raise ValueError(f"sinks must have one logit per query head ([{num_heads}]), got {tuple(sinks.shape)}")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads
        self.kv_cache_dtype = kv_cache_dtype
        self.alibi_slopes = None if alibi_slopes is None else torch.tensor(alibi_slopes, dtype=torch.float32)
        # vLLM's sliding_window w: a decoder token sees itself and the w - 1 tokens before it,
        # which is flash-attn's window (w - 1, 0).
        self.window = (-1, -1) if sliding_window is None else (int(sliding_window) - 1, 0)
        self.softcap = float(logits_soft_cap or 0.0)
        self.attn_type = attn_type
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        self.sinks = sinks

    def _caches(self, kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V ``[num_blocks, block_size, Hkv, D]`` views of vLLM's per-layer cache tensor."""
        key_cache, value_cache = kv_cache.transpose(1, 2).split(self.head_size, dim=-1)
        return key_cache, value_cache

    def do_kv_cache_update(self, layer: Any, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                           slot_mapping: torch.Tensor) -> None:
        """Write this step's K/V ``[num_tokens, Hkv, D]`` into the cache through ``slot_mapping``."""
        key_cache, value_cache = self._caches(kv_cache)
        write_kv_cache(key, value, key_cache, value_cache, slot_mapping)

    def forward(self, layer: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, attn_metadata: TrituneAttentionMetadata, output: torch.Tensor,
                output_scale: torch.Tensor | None = None, output_block_scale: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Attention of the step's query ``[num_tokens, Hq, D]`` into ``output`` (same shape).

        The cache already holds this step's keys (vLLM called :meth:`do_kv_cache_update`).
        """
        if output_scale is not None or output_block_scale is not None:
            raise ValueError("output_scale/output_block_scale: fused output quantization is not supported by "
                             "the TRITUNE backend")
        if attn_metadata is None:  # vLLM's memory-profiling run
            return output.fill_(0)
        n = attn_metadata.num_actual_tokens
        key_cache, value_cache = self._caches(kv_cache)
        alibi = self.alibi_slopes
        if alibi is not None and alibi.device != query.device:
            alibi = self.alibi_slopes = alibi.to(query.device)
        varlen_attention(
            query[:n], key_cache, value_cache, attn_metadata.query_start_loc, attn_metadata.max_query_len,
            attn_metadata.max_seq_len, seqused_k=attn_metadata.seq_lens, block_table=attn_metadata.block_table,
            causal=True, window_size=self.window, softcap=self.softcap, alibi_slopes=alibi, sinks=self.sinks,
            scale=self.scale, out=output[:n])
        return output


def refuse_unsupported(*, head_size: int, kv_cache_dtype: str, attn_type: str, extra: dict[str, Any]) -> None:
    """ValueError naming the first layer option the kernel cannot honour."""
    if attn_type != AttentionType.DECODER:
        raise ValueError(f"attn_type={attn_type!r}: the TRITUNE backend runs decoder self-attention only "
                         "(encoder, encoder-only and cross-attention layers need another backend)")
    if head_size not in HEAD_SIZES:
        raise ValueError(f"head_size={head_size} is not supported by the TRITUNE backend; supported: {HEAD_SIZES}")
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r} is not supported by the TRITUNE backend; "
                         f"supported: {KV_CACHE_DTYPES}")
    # Options vLLM passes to some implementations; refused unless they hold their no-op value.
    defaults = {"use_alibi_sqrt": False, "chunk_lookback": -1}
    for name, value in extra.items():
        if name not in defaults or value != defaults[name]:
            raise ValueError(f"{name}={value!r} is not supported by the TRITUNE backend")


__all__ = ["TrituneAttentionBackend", "TrituneAttentionImpl", "TrituneAttentionMetadata", "TrituneMetadataBuilder",
           "combination_problem", "refuse_unsupported"]
