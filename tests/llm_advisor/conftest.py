"""Small synthetic landscapes and a tiny trained model shared by the advisor tests."""

from __future__ import annotations

import math
import random

import pytest
from tritune.search_space import Hardware, load_landscapes, write_landscape

PARAMS = {"bx": (16, 32, 64, 128), "by": (1, 2, 4), "tile": (1, 2, 3), "flag": (0, 1)}


def _time(c: dict, hw: Hardware) -> float:
    # A smooth made-up landscape whose optimum moves with the device's SM count.
    ideal = 32 if hw.sm_count < 80 else 64
    return 1.0 + abs(math.log2(c["bx"] / ideal)) + 0.3 * abs(c["by"] - 2) + 0.2 * c["tile"] + 0.1 * c["flag"]


def synthetic_landscapes(directory, devices=("A100", "A4000", "MI250X", "W6600")) -> list:
    rng = random.Random(0)
    paths = []
    for device in devices:
        hw = Hardware.from_spec(device)
        results = []
        for bx in PARAMS["bx"]:
            for by in PARAMS["by"]:
                for tile in PARAMS["tile"]:
                    for flag in PARAMS["flag"]:
                        c = {"bx": bx, "by": by, "tile": tile, "flag": flag}
                        if bx * by * tile > 512:  # the "constraint": absent from the recording
                            continue
                        failed = rng.random() < 0.05
                        results.append((c, None if failed else _time(c, hw), "RuntimeFailedConfig" if failed else None,
                                        {"compile_time": 10.0}))
        paths.append(write_landscape(directory / f"{device}.json.gz", kernel="toy", kernel_name="toy_kernel",
                                     spec={"n": 4096}, hardware=hw, params=PARAMS, results=results))
    return paths


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_landscapes")
    synthetic_landscapes(d)
    return d


@pytest.fixture(scope="session")
def toy_landscapes(toy_dir):
    return load_landscapes([toy_dir])


@pytest.fixture(scope="session")
def tiny_lm(toy_landscapes):
    """A TensorLM trained for a few seconds on three toy GPUs (the fourth, W6600, held out)."""
    from tritune.llm_advisor import TrainOptions, train

    records = [r for land in toy_landscapes if not land.name.endswith("W6600") for r in land.records()]
    return train(records, options=TrainOptions(n_embd=32, n_layer=1, pretrain_steps=20, finetune_steps=60, batch_size=32))
