"""The contract every kernel family implements, and the verification the tuner relies on.

A family is one parameterized Triton template plus what it takes to tune it: the problem spec
type, the search space (in ``tritune.search_space``), random inputs, a launcher taking an explicit
config, a high-precision reference, and an AOT compile for a GPU target. Families never import
the runtime or the database; the tuner and the public ops drive them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from tritune.search_space import (
    Config,
    Hardware,
    ProblemSpec,
    SearchSpace,
    default_config,
    space_for,
)

from ._compile import CompileReport

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Verification:
    """Outcome of checking one launch against the reference.

    ``error`` is the max |out - ref| of the kernel; ``allowed`` the bound it had to meet (the
    dtype rule: 2x the error of the same math done by PyTorch in the input dtype, plus a small
    absolute term). ``message`` says what went wrong in a line, None when it passed.
    """

    ok: bool
    error: float
    allowed: float
    message: str | None = None


class KernelFamily(ABC):
    """Contract:

    - ``name`` is the registry key and ``spec_type.kernel``.
    - ``source_hash`` changes whenever the kernel source changes, so tuned configs of an older
      kernel are never served for a newer one.
    - ``make_inputs`` draws fresh random inputs (never zeros) for ``spec`` on ``device``.
    - ``launch(inputs, config)`` runs the template with exactly ``config`` and returns the output.
    - ``reference(inputs)`` computes the same result in float32 or float64 with PyTorch.
    - ``verify`` launches into a poisoned output and compares with the reference.
    - ``compile(spec, config, arch)`` compiles for ``sm_{arch}`` without a GPU.
    """

    name: ClassVar[str]
    spec_type: ClassVar[type[ProblemSpec]]
    module_name: ClassVar[str]  # the module holding the @triton.jit source (hashed)
    jit_kernels: ClassVar[tuple[str, ...]] = ()  # that module's @triton.jit kernels ``launch`` runs

    @property
    def source_hash(self) -> str:
        return source_hash(self.module_name)

    def space(self, spec: ProblemSpec, hardware: Hardware) -> SearchSpace:
        return space_for(spec, hardware)

    def default_config(self, spec: ProblemSpec, hardware: Hardware) -> Config:
        return default_config(spec, hardware)

    @abstractmethod
    def make_inputs(self, spec: ProblemSpec, device: torch.device | str, seed: int) -> Mapping[str, Any]: ...

    @abstractmethod
    def launch(self, inputs: Mapping[str, Any], config: Config) -> torch.Tensor: ...

    @abstractmethod
    def reference(self, inputs: Mapping[str, Any]) -> torch.Tensor: ...

    @abstractmethod
    def verify(self, spec: ProblemSpec, config: Config, device: torch.device | str, seed: int) -> Verification: ...

    @abstractmethod
    def compile(self, spec: ProblemSpec, config: Config, arch: int = 90) -> CompileReport: ...

    def work(self, spec: ProblemSpec) -> dict[str, float]:
        """What one launch computes, for throughput figures: ``flops`` and/or ``bytes``."""
        return {}

    def warm_inputs(self, spec: ProblemSpec) -> list[Mapping[str, Any]]:
        """Inputs on the ``meta`` device (shapes, strides, dtypes; no memory) for ``warm``."""
        return [self.make_inputs(spec, "meta", 0)]

    def warm(self, spec: ProblemSpec, config: Config) -> int:
        """Compile ``config`` for ``spec`` through Triton's JIT on the current GPU, running nothing.

        The launch goes through ``launch`` itself, so Triton derives the same specialization
        (dtypes, 16-byte alignment, integer divisibility) and the same cache key as the real
        launch will, and the binary lands in Triton's on-disk cache: the process that measures
        the config later only loads it. (An AOT compile cannot promise the same key.) Returns
        the number of kernel specializations compiled or found.
        """
        module = importlib.import_module(self.module_name)
        originals = {name: getattr(module, name) for name in self.jit_kernels}
        compiled = 0

        class CompileOnly:
            def __init__(self, fn: Any) -> None:
                self.fn = fn

            def __getitem__(self, grid: Any) -> Callable[..., None]:
                def run(*args: Any, **kwargs: Any) -> None:
                    nonlocal compiled
                    self.fn.warmup(*args, grid=grid, **kwargs)
                    compiled += 1
                return run

        try:
            for name, fn in originals.items():
                setattr(module, name, CompileOnly(fn))
            for inputs in self.warm_inputs(spec):
                self.launch(inputs, config)
        finally:
            for name, fn in originals.items():
                setattr(module, name, fn)
        return compiled

    def _expected(self, key: tuple, build: Callable[[], tuple[Mapping[str, Any], torch.Tensor, torch.Tensor]],
                  ) -> tuple[Mapping[str, Any], torch.Tensor, torch.Tensor]:
        """(inputs, reference, baseline) for ``key``, kept from the previous call when it matches.

        A landscape verifies hundreds of configs on one shape, and at tuning sizes the two
        chunked reference passes cost more than the kernel. The inputs' checksums are compared
        on every reuse, so a config that wrote into its inputs cannot corrupt later checks.
        """
        cached = getattr(self, "_expected_cache", None)
        if cached is not None and cached[0] == key and _checksums(cached[1][0]) == cached[2]:
            return cached[1]
        value = build()
        self._expected_cache = (key, value, _checksums(value[0]))
        return value


def _checksums(inputs: Mapping[str, Any]) -> tuple[float, ...]:
    # nansum: a paged cache poisons its unused slots with NaN, and NaN never equals itself. The
    # reduction accumulates in float64 without a float64 copy (tuning-size caches are GBs).
    return tuple(float(torch.nansum(t, dtype=torch.float64) if t.is_floating_point() else t.sum(dtype=torch.int64))
                 for t in inputs.values() if isinstance(t, torch.Tensor))


_HASHES: dict[str, str] = {}


def source_hash(module_name: str) -> str:
    """First 12 hex digits of sha256 over a kernel module's source and its Triton helpers.

    Helpers are the sibling modules it imports as ``from ._name import ...`` that define
    ``@triton.jit`` functions (e.g. ``_exp2``): editing one changes the compiled kernel, so it
    must change the hash too; ``_compile`` and ``_family`` define no kernels and do not count.
    Read from the files without importing, so looking up tuned configs (``tritune query``) never
    has to define the Triton kernels.
    """
    if module_name not in _HASHES:
        digest = hashlib.sha256(_source(module_name))
        package = module_name.rsplit(".", 1)[0]
        for helper in sorted(set(_HELPER_IMPORT.findall(_source(module_name).decode()))):
            text = _source(f"{package}.{helper}")
            if b"@triton.jit" in text:
                digest.update(text)
        _HASHES[module_name] = digest.hexdigest()[:12]
    return _HASHES[module_name]


_HELPER_IMPORT = re.compile(r"^from \.(_\w+) import", re.M)


def _source(module_name: str) -> bytes:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of kernel module {module_name!r}")
    with open(spec.origin, "rb") as f:
        return f.read()


# Absolute slack added to the 2x rule, per dtype: covers outputs near zero, where the PyTorch
# baseline can be exact by luck and 2x of ~0 would reject a correct kernel.
ABS_SLACK = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 2e-3}


def compare(out: torch.Tensor, ref: torch.Tensor, baseline: torch.Tensor) -> Verification:
    """The dtype rule: |out - ref| no more than 2x |baseline - ref| plus a small absolute term.

    ``ref`` is the float32/float64 reference, ``baseline`` the same math done by PyTorch in the
    input dtype. A NaN or inf anywhere (e.g. a poisoned element the kernel never wrote) fails.
    """
    if out.shape != ref.shape:
        return Verification(False, float("inf"), 0.0, f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    finite = torch.isfinite(out)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        return Verification(False, float("inf"), 0.0, f"{bad} of {out.numel()} output elements are NaN/inf (unwritten or overflow)")
    ref64 = ref.double()
    err = float((out.double() - ref64).abs().max()) if out.numel() else 0.0
    base = float((baseline.double() - ref64).abs().max()) if out.numel() else 0.0
    allowed = 2.0 * base + ABS_SLACK.get(out.dtype, 2e-3)
    if err > allowed:
        return Verification(False, err, allowed, f"max error {err:.3g} > allowed {allowed:.3g} (2x PyTorch's {base:.3g} + slack)")
    return Verification(True, err, allowed)
