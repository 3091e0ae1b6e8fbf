"""Training options of the advisor (pure Python, so the CLI can show defaults without torch)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CorpusOptions:
    """How records become sentences. Fractions are of a group's successful configs."""

    # Upper rank fractions of the quality bands q=0, q=1, ...; the last band takes the rest.
    quality_cuts: tuple[float, ...] = (0.005, 0.02, 0.05, 0.15, 0.4)
    keep_all_below: float = 0.05  # every config ranked in the best 5% is a sentence ...
    per_band: int = 300  # ... the other bands (and failures) are subsampled to this many per problem
    pretrain_per_group: int = 400  # sampled valid configs per group (q=any)
    top_weight_power: float = 4.0  # the kept best configs weigh (fraction of optimum) ** power
    seed: int = 0

@dataclass(frozen=True)
class TrainOptions:
    """Model size and the two training phases (steps, not epochs: the corpus size varies)."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    dropout: float = 0.0  # word dropout regularizes; layer dropout only slows CPU training
    batch_size: int = 64
    pretrain_steps: int = 150
    # None: ``steps_per_problem`` for each measured problem (a device x kernel x shape), within
    # [2000, 20000]: every problem gets the same share of training however many there are.
    finetune_steps: int | None = None
    steps_per_problem: int = 1000
    lr: float = 3e-3
    weight_decay: float = 0.01
    quality_weight: float = 3.0  # loss weight of the quality word against the config words
    word_dropout: float = 0.15  # chance a context word is replaced by its slot's unknown word
    name_dropout: float = 0.5  # the device-name word more often: names never transfer
    prefix_variants: int = 4  # dropout patterns of the shared prefix per batch (divides batch_size)
    threads: int = 1  # more threads on a shared, oversubscribed CPU is ~20x slower (measured)
    seed: int = 0

    def resolved(self, problems: int) -> TrainOptions:
        """These options with ``finetune_steps`` fixed for ``problems`` measured problems."""
        if self.finetune_steps is not None:
            return self
        return replace(self, finetune_steps=min(20_000, max(2_000, self.steps_per_problem * problems)))
