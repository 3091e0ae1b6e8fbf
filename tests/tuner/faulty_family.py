"""A kernel family with one config per way a config can go wrong, for the tuner's fault tests.

The kernel scales a vector (``y = alpha * x``) in tiles of ``block``. ``variant`` picks the fault:
``good`` is correct (larger blocks run faster under the interpreter), ``compile_error`` trips a
``tl.static_assert`` (CompilationError on a GPU, InterpreterError under the interpreter),
``out_of_smem`` raises Triton's own OutOfResources at launch, ``wrong`` returns a wrong result
(and is by far the fastest, so the tuner must not pick it), ``hang`` never returns, ``crash``
kills its worker process with SIGSEGV. ``block`` larger than ``n`` is rejected by the space.

Test hooks (environment): TRITUNE_TEST_MEASURE_LOG appends one line per verified config (to
check that no config is measured twice); TRITUNE_TEST_DELAY_S sleeps in every good verification.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import triton
import triton.language as tl
from tritune.kernels import KernelFamily, Verification, compare
from tritune.kernels._compile import CompileReport
from tritune.search_space import (
    Config,
    Constraint,
    Hardware,
    Param,
    ProblemSpec,
    SearchSpace,
    config_key,
)

VARIANTS = ("good", "compile_error", "out_of_smem", "wrong", "hang", "crash")


@dataclass(frozen=True)
class FaultySpec(ProblemSpec):
    n: int = 256

    kernel: ClassVar[str] = "faulty"
    EXACT: ClassVar[tuple[str, ...]] = ()
    SCALED: ClassVar[tuple[str, ...]] = ("n",)

    def __post_init__(self) -> None:
        self._positive("n")


@dataclass(frozen=True)
class FaultyConfig(Config):
    block: int = 32
    variant: str = "good"


@triton.jit
def _scale(X, Y, N, alpha, BLOCK: tl.constexpr, BROKEN: tl.constexpr):
    tl.static_assert(not BROKEN, "deliberately broken config")
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask)
    tl.store(Y + offs, x * alpha, mask=mask)


class FaultyFamily(KernelFamily):
    name = "faulty"
    spec_type = FaultySpec
    module_name = __name__

    def space(self, spec: FaultySpec, hardware: Hardware) -> SearchSpace:
        def fits(values: Mapping[str, Any]) -> str | None:
            return None if int(values["block"]) <= spec.n else f"block={values['block']} is larger than n={spec.n}"

        return SearchSpace(
            name=f"faulty[n={spec.n}]",
            params=(Param("block", (16, 32, 64, 128)), Param("variant", VARIANTS)),
            constraints=(Constraint("block_fits", fits),),
            default_values={"block": 16, "variant": "good"},
            config_type=FaultyConfig,
        )

    def default_config(self, spec: FaultySpec, hardware: Hardware) -> FaultyConfig:
        return FaultyConfig(16, "good")

    def make_inputs(self, spec: FaultySpec, device: Any, seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        return {"x": torch.randn(spec.n, generator=gen).to(device), "alpha": 1.5}

    def launch(self, inputs: Mapping[str, Any], config: FaultyConfig, out: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs["x"]
        y = torch.empty_like(x) if out is None else out
        if config.variant == "out_of_smem":
            raise triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")
        if config.variant == "hang":
            time.sleep(3600)
        if config.variant == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if config.variant == "wrong":
            y.copy_(x * inputs["alpha"] + 1.0)  # fast, and wrong
            return y
        grid = (triton.cdiv(x.numel(), config.block),)
        _scale[grid](x, y, x.numel(), inputs["alpha"], BLOCK=config.block,
                     BROKEN=config.variant == "compile_error")
        return y

    def reference(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        return inputs["x"].double() * inputs["alpha"]

    def verify(self, spec: FaultySpec, config: FaultyConfig, device: Any, seed: int) -> Verification:
        log = os.environ.get("TRITUNE_TEST_MEASURE_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{config_key(config.to_dict())}\n")
        if config.variant == "good" and os.environ.get("TRITUNE_TEST_DELAY_S"):
            time.sleep(float(os.environ["TRITUNE_TEST_DELAY_S"]))
        inputs = self.make_inputs(spec, device, seed)
        out = torch.full_like(inputs["x"], float("nan"))
        self.launch(inputs, config, out=out)
        return compare(out, self.reference(inputs), inputs["x"] * inputs["alpha"])

    def compile(self, spec: FaultySpec, config: FaultyConfig, arch: int = 90) -> CompileReport:
        # What the GPU compile tier would report, without compiling: enough to test the pipeline.
        if config.variant == "compile_error":
            return CompileReport(ok=False, arch=arch, num_warps=4, num_stages=1, fits=False,
                                 error="CompilationError: deliberately broken config")
        if config.variant == "out_of_smem":
            return CompileReport(ok=True, arch=arch, num_warps=4, num_stages=1, shared_bytes=300000, fits=False)
        return CompileReport(ok=True, arch=arch, num_warps=4, num_stages=1, shared_bytes=4 * config.block)


FAMILY = FaultyFamily()


def fake_gpu_measure(ref: Any, spec: Any, hardware: Any, values: Any, seed: int, settings: Any) -> Any:
    """Stands in for the GPU measurement in pipeline tests: the interpreter's, labelled as real."""
    import dataclasses

    from tritune.tuner._tasks import InterpreterSettings, interpreter_measure

    result = interpreter_measure(ref, spec, hardware, values, seed, InterpreterSettings(repeats=1))
    return dataclasses.replace(result, real_timing=True)
