"""Hardware fingerprints and a small table of device specs.

A fingerprint is what a tuned config is keyed by: a config measured on one fingerprint is never
served to another unless the caller asks for a cross-hardware fallback. The Triton version is
part of it because the same source compiles to different code across Triton releases.

Pure Python: ``detect`` imports torch/triton only when called.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

CPU_INTERPRETER = "cpu-interpreter"


@dataclass(frozen=True)
class Hardware:
    """Fingerprint of the device a measurement was (or will be) made on."""

    name: str  # device name as the driver reports it, or "cpu-interpreter"
    backend: str  # "cuda", "hip", "cpu-interpreter", or "recorded" (a landscape file's GPU)
    compute_capability: str  # "9.0" for sm_90; "" where it has no meaning
    sm_count: int  # streaming multiprocessors (CUDA) or compute units (HIP)
    smem_per_block: int  # bytes of shared memory one program may use (opt-in maximum)
    triton_version: str

    @property
    def key(self) -> str:
        """Stable text key used in the database."""
        return (
            f"{self.backend}|{self.name}|cc{self.compute_capability}|{self.sm_count}sm|"
            f"{self.smem_per_block}B|triton-{self.triton_version}"
        )

    @property
    def is_interpreter(self) -> bool:
        return self.backend == CPU_INTERPRETER

    @property
    def spec(self) -> DeviceSpec | None:
        return device_spec(self.name)

    @property
    def vendor(self) -> str | None:
        """"nvidia", "amd", "intel" or None: from the spec table, the backend, else the name
        (a recorded landscape from a GPU the table lacks still says "GeForce" or "Radeon")."""
        spec = self.spec
        if spec is not None:
            return spec.vendor
        if self.backend in _BACKEND_VENDORS:
            return _BACKEND_VENDORS[self.backend]
        return _vendor_in_name(self.name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    @classmethod
    def cpu_interpreter(cls, triton_version: str | None = None) -> Hardware:
        """The fingerprint of runs under ``TRITON_INTERPRET=1``: never mistaken for a GPU.

        Its shared-memory budget is H100's, so the spaces tuned on CPU keep the configs that
        would also compile on the GPU the interpreter stands in for.
        """
        return cls(
            name=CPU_INTERPRETER,
            backend=CPU_INTERPRETER,
            compute_capability="",
            sm_count=1,  # the core count must not split one machine's CPU results from another's
            smem_per_block=232448,
            triton_version=triton_version or _triton_version(),
        )

    @classmethod
    def from_spec(cls, name: str, triton_version: str = "any") -> Hardware:
        """A fingerprint for a device in the spec table, e.g. to compile for it without one."""
        spec = device_spec(name)
        if spec is None:
            known = ", ".join(s.name for s in DEVICE_SPECS)
            raise ValueError(f"unknown device {name!r}; known devices: {known}")
        return cls(
            name=spec.name,
            backend="hip" if spec.vendor == "amd" else "cuda",
            compute_capability=spec.compute_capability,
            sm_count=spec.sm_count,
            smem_per_block=spec.smem_per_block,
            triton_version=triton_version,
        )


_BACKEND_VENDORS = {"cuda": "nvidia", "hip": "amd", "xpu": "intel"}
_NAME_VENDORS = (("nvidia", r"nvidia|geforce|tesla|quadro|titan|\brtx\b"),
                 ("amd", r"\bamd\b|radeon|instinct|\bmi\d{2,3}"),
                 ("intel", r"intel|\barc\b"))


@functools.lru_cache(maxsize=1024)  # asked per record and per sentence, like device_spec
def _vendor_in_name(name: str) -> str | None:
    lowered = name.lower()
    return next((v for v, pattern in _NAME_VENDORS if re.search(pattern, lowered)), None)


@dataclass(frozen=True)
class DeviceSpec:
    """Datasheet figures for a device: features for the cost model and advisor.

    Figures are per device as a program sees it (one GCD for MI250X). Bandwidth in GB/s, compute
    in TFLOP/s (dense tensor-core fp16 and plain fp32), caches in bytes.
    """

    name: str
    aliases: tuple[str, ...]
    vendor: str  # "nvidia" or "amd"
    arch: str
    compute_capability: str
    sm_count: int
    smem_per_block: int
    smem_per_sm: int
    regs_per_sm: int
    max_threads_per_sm: int
    l2_bytes: int
    mem_bw_gbs: float
    fp16_tflops: float
    fp32_tflops: float
    warp_size: int = 32


_KB = 1024
_MB = 1024 * 1024

DEVICE_SPECS: tuple[DeviceSpec, ...] = (
    DeviceSpec("NVIDIA H100 80GB HBM3", ("H100 80GB HBM3", "H100 SXM", "H100"), "nvidia", "hopper", "9.0",
               132, 227 * _KB, 228 * _KB, 65536, 2048, 50 * _MB, 3350, 989, 67),
    DeviceSpec("NVIDIA H100 PCIe", ("H100 PCIe",), "nvidia", "hopper", "9.0",
               114, 227 * _KB, 228 * _KB, 65536, 2048, 50 * _MB, 2000, 756, 51),
    DeviceSpec("NVIDIA H200", ("H200",), "nvidia", "hopper", "9.0",
               132, 227 * _KB, 228 * _KB, 65536, 2048, 50 * _MB, 4800, 989, 67),
    DeviceSpec("NVIDIA A100-PCIE-40GB", ("A100-PCIE", "A100-SXM", "A100"), "nvidia", "ampere", "8.0",
               108, 163 * _KB, 164 * _KB, 65536, 2048, 40 * _MB, 1555, 312, 19.5),
    DeviceSpec("NVIDIA RTX A6000", ("RTX A6000", "A6000"), "nvidia", "ampere", "8.6",
               84, 99 * _KB, 100 * _KB, 65536, 1536, 6 * _MB, 768, 155, 38.7),
    DeviceSpec("NVIDIA RTX A4000", ("RTX A4000", "A4000"), "nvidia", "ampere", "8.6",
               48, 99 * _KB, 100 * _KB, 65536, 1536, 4 * _MB, 448, 77, 19.2),
    DeviceSpec("NVIDIA A10", ("A10G", "A10"), "nvidia", "ampere", "8.6",
               72, 99 * _KB, 100 * _KB, 65536, 1536, 6 * _MB, 600, 125, 31.2),
    DeviceSpec("NVIDIA L40S", ("L40S",), "nvidia", "ada", "8.9",
               142, 99 * _KB, 100 * _KB, 65536, 1536, 96 * _MB, 864, 362, 91.6),
    DeviceSpec("NVIDIA GeForce RTX 4090", ("RTX 4090",), "nvidia", "ada", "8.9",
               128, 99 * _KB, 100 * _KB, 65536, 1536, 72 * _MB, 1008, 165, 82.6),
    DeviceSpec("AMD Instinct MI250X", ("MI250X",), "amd", "cdna2", "gfx90a",
               110, 64 * _KB, 64 * _KB, 131072, 2048, 8 * _MB, 1600, 191.5, 23.9, warp_size=64),
    DeviceSpec("AMD Radeon PRO W7800", ("W7800",), "amd", "rdna3", "gfx1100",
               70, 64 * _KB, 128 * _KB, 196608, 2048, 6 * _MB, 576, 90.5, 45.2),
    DeviceSpec("AMD Radeon PRO W6600", ("W6600",), "amd", "rdna2", "gfx1032",
               28, 64 * _KB, 128 * _KB, 131072, 2048, 2 * _MB, 224, 20.8, 10.4),
    # More of the devices people tune on, so that a landscape or a fingerprint from one of them
    # gets real features instead of unknown words (datasheet figures; GeForce tensor rates are
    # with fp32 accumulation, as attention kernels use them; laptop parts at typical clocks).
    DeviceSpec("NVIDIA A100-SXM4-80GB", ("A100-SXM4-80GB", "A100 80GB"), "nvidia", "ampere", "8.0",
               108, 163 * _KB, 164 * _KB, 65536, 2048, 40 * _MB, 2039, 312, 19.5),
    DeviceSpec("NVIDIA A30", ("A30",), "nvidia", "ampere", "8.0",
               56, 163 * _KB, 164 * _KB, 65536, 2048, 24 * _MB, 933, 165, 10.3),
    DeviceSpec("NVIDIA A40", ("A40",), "nvidia", "ampere", "8.6",
               84, 99 * _KB, 100 * _KB, 65536, 1536, 6 * _MB, 696, 149.7, 37.4),
    DeviceSpec("NVIDIA H100 NVL", ("H100 NVL",), "nvidia", "hopper", "9.0",
               132, 227 * _KB, 228 * _KB, 65536, 2048, 50 * _MB, 3938, 835, 60),
    DeviceSpec("NVIDIA GH200 480GB", ("GH200",), "nvidia", "hopper", "9.0",
               132, 227 * _KB, 228 * _KB, 65536, 2048, 50 * _MB, 4000, 989, 67),
    DeviceSpec("NVIDIA H20", ("H20",), "nvidia", "hopper", "9.0",
               78, 227 * _KB, 228 * _KB, 65536, 2048, 60 * _MB, 4000, 148, 44),
    DeviceSpec("NVIDIA L4", ("L4",), "nvidia", "ada", "8.9",
               58, 99 * _KB, 100 * _KB, 65536, 1536, 48 * _MB, 300, 121, 30.3),
    DeviceSpec("NVIDIA L40", ("L40",), "nvidia", "ada", "8.9",
               142, 99 * _KB, 100 * _KB, 65536, 1536, 96 * _MB, 864, 181, 90.5),
    DeviceSpec("NVIDIA RTX 6000 Ada Generation", ("RTX 6000 Ada",), "nvidia", "ada", "8.9",
               142, 99 * _KB, 100 * _KB, 65536, 1536, 96 * _MB, 960, 364, 91.1),
    DeviceSpec("NVIDIA GeForce RTX 4080", ("RTX 4080",), "nvidia", "ada", "8.9",
               76, 99 * _KB, 100 * _KB, 65536, 1536, 64 * _MB, 717, 97.5, 48.7),
    DeviceSpec("NVIDIA GeForce RTX 3090", ("RTX 3090",), "nvidia", "ampere", "8.6",
               82, 99 * _KB, 100 * _KB, 65536, 1536, 6 * _MB, 936, 71, 35.6),
    DeviceSpec("NVIDIA GeForce RTX 3080", ("RTX 3080",), "nvidia", "ampere", "8.6",
               68, 99 * _KB, 100 * _KB, 65536, 1536, 5 * _MB, 760, 59.5, 29.8),
    DeviceSpec("NVIDIA GeForce RTX 3060", ("RTX 3060",), "nvidia", "ampere", "8.6",
               28, 99 * _KB, 100 * _KB, 65536, 1536, 3 * _MB, 360, 25.6, 12.7),
    DeviceSpec("NVIDIA GeForce RTX 3060 Laptop GPU", ("RTX 3060 Laptop",), "nvidia", "ampere", "8.6",
               30, 99 * _KB, 100 * _KB, 65536, 1536, 3 * _MB, 336, 21.8, 10.9),
    DeviceSpec("NVIDIA GeForce RTX 2080 Ti", ("RTX 2080 Ti",), "nvidia", "turing", "7.5",
               68, 64 * _KB, 64 * _KB, 65536, 1024, 5632 * _KB, 616, 53.8, 13.4),
    DeviceSpec("NVIDIA TITAN RTX", ("TITAN RTX",), "nvidia", "turing", "7.5",
               72, 64 * _KB, 64 * _KB, 65536, 1024, 6 * _MB, 672, 130.5, 16.3),
    DeviceSpec("Tesla T4", ("NVIDIA T4", "T4"), "nvidia", "turing", "7.5",
               40, 64 * _KB, 64 * _KB, 65536, 1024, 4 * _MB, 320, 65, 8.1),
    DeviceSpec("Tesla V100-SXM2-16GB", ("V100-SXM2", "V100"), "nvidia", "volta", "7.0",
               80, 96 * _KB, 96 * _KB, 65536, 2048, 6 * _MB, 900, 125, 15.7),
    DeviceSpec("Tesla V100-PCIE-16GB", ("V100-PCIE",), "nvidia", "volta", "7.0",
               80, 96 * _KB, 96 * _KB, 65536, 2048, 6 * _MB, 900, 112, 14),
    DeviceSpec("AMD Instinct MI300X", ("MI300X",), "amd", "cdna3", "gfx942",
               304, 64 * _KB, 64 * _KB, 131072, 2048, 32 * _MB, 5300, 1307, 81.7, warp_size=64),
    DeviceSpec("AMD Instinct MI210", ("MI210",), "amd", "cdna2", "gfx90a",
               104, 64 * _KB, 64 * _KB, 131072, 2048, 8 * _MB, 1638, 181, 22.6, warp_size=64),
    DeviceSpec("AMD Instinct MI100", ("MI100",), "amd", "cdna", "gfx908",
               120, 64 * _KB, 64 * _KB, 131072, 2048, 8 * _MB, 1229, 184.6, 23.1, warp_size=64),
    DeviceSpec("AMD Instinct MI50", ("MI50",), "amd", "gcn5", "gfx906",
               60, 64 * _KB, 64 * _KB, 65536, 2048, 4 * _MB, 1024, 26.5, 13.3, warp_size=64),
    DeviceSpec("AMD Radeon RX 7900 XTX", ("7900 XTX",), "amd", "rdna3", "gfx1100",
               96, 64 * _KB, 128 * _KB, 196608, 2048, 6 * _MB, 960, 122.8, 61.4),
    DeviceSpec("AMD Radeon PRO W7900", ("W7900",), "amd", "rdna3", "gfx1100",
               96, 64 * _KB, 128 * _KB, 196608, 2048, 6 * _MB, 864, 122.6, 61.3),
    DeviceSpec("AMD Radeon PRO W7700", ("W7700",), "amd", "rdna3", "gfx1101",
               48, 64 * _KB, 128 * _KB, 196608, 2048, 4 * _MB, 576, 56.6, 28.3),
)


@functools.lru_cache(maxsize=1024)  # called per record and per sentence; a process sees few names
def device_spec(name: str) -> DeviceSpec | None:
    """The spec whose name or alias occurs in ``name`` as whole words (case-insensitive), longest
    alias first: "NVIDIA A10" must not match "NVIDIA A100-SXM4-40GB", nor "H20" match "H200"."""
    lowered = name.lower()
    candidates = [(len(a), s) for s in DEVICE_SPECS for a in (s.name, *s.aliases) if _occurs(a.lower(), lowered)]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


def _occurs(alias: str, name: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(alias)}(?![a-z0-9])", name) is not None


def interpreting() -> bool:
    """True when Triton kernels defined in this process run in the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_version() -> str:
    try:
        import triton
    except ImportError:  # pure-Python use (cost model on a laptop) has no triton
        return "none"
    return triton.__version__


def detect(device: Any = None) -> Hardware:
    """Fingerprint of ``device`` (a torch device, index or None for the current CUDA device).

    Under the Triton interpreter, or without a GPU, this is the ``cpu-interpreter`` fingerprint.
    """
    import torch

    if interpreting() or not torch.cuda.is_available():
        return Hardware.cpu_interpreter()
    dev = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    if dev.type != "cuda":
        return Hardware.cpu_interpreter()
    props = torch.cuda.get_device_properties(dev)
    hip = getattr(torch.version, "hip", None) is not None
    smem = int(getattr(props, "shared_memory_per_block_optin", 0) or 0)
    if not smem:
        import triton

        smem = int(triton.runtime.driver.active.utils.get_device_properties(dev.index or 0)["max_shared_mem"])
    return Hardware(
        name=props.name,
        backend="hip" if hip else "cuda",
        compute_capability=getattr(props, "gcnArchName", "") if hip else f"{props.major}.{props.minor}",
        sm_count=int(props.multi_processor_count),
        smem_per_block=smem,
        triton_version=_triton_version(),
    )
