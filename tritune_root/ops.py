"""Public drop-in ops: the only place that joins "look up the tuned config" with "launch".

Each op module registers a ``torch.library`` custom op (with a fake implementation for
torch.compile) when it is first imported, which happens on first use of ``tritune.<op>``.
"""

from ._flash_op import flash_attention
from ._paged_op import paged_attention
from ._varlen_op import varlen_attention

__all__ = ["flash_attention", "paged_attention", "varlen_attention"]
