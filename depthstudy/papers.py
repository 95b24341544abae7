"""The papers' reference numbers, in one place, and the recipe each was measured under.

A number is set beside a group of runs only where the runs follow that table's recipe: every setting of the study
(report's `defines_recipe`) equal to the preset the table names, the table's own axes (depth, unit, data set, ...)
aside, and those axes equal to the row's. Each table says what its number summarises (He 2016: "the median accuracy
of 5 runs for each architecture on CIFAR"; He 2015 Table 6: one run, ResNet-110 the mean of 5); the report's gap is
our median's, its one summary. No torch: the recipes are Hydra compositions (depthstudy.config).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from depthstudy.rundir import flatten, inert_keys
from depthstudy.runs import NOT_CONFIG

# The trainer's one switch that changes the numbers (the others change speed or memory layout only).
NUMERIC_TRAINER_KEYS = ("trainer.precision",)


def defines_recipe(key: str) -> bool:
    """Whether a config key is part of a paper's recipe: every setting of the study, not the bookkeeping."""
    return key not in NOT_CONFIG and (not key.startswith("trainer.") or key in NUMERIC_TRAINER_KEYS)


@dataclass(frozen=True)
class Table:
    name: str  # as the report names it: "He 2015 Table 6"
    recipe: tuple[str, ...]  # the overrides that compose its recipe
    statistic: str  # what every number of the table summarises ("median of 5"); "" where it varies (its note says)
    note: str  # report.md's footnote, where the table appears
    rows: tuple[tuple[dict, float], ...]  # the settings of a row (the table's axes) and its test error (%)

    @property
    def label(self) -> str:
        """Its name, with what its numbers summarise where that is one thing: "He 2016 Table 2 (median of 5)"."""
        return f"{self.name} ({self.statistic})" if self.statistic else self.name


def _units(depth: int, shortcut: str, bottleneck: bool, numbers: dict, data: str = "cifar10") -> tuple:
    return tuple(({"data.name": data, "model.depth": depth, "model.shortcut": shortcut, "model.bottleneck": bottleneck,
                   "model.block": block}, number) for block, number in numbers.items())


TABLES = (
    Table("He 2015 Table 6", ("experiment=he2015",), "",
          "He 2015 Table 6: CIFAR-10, option A, one run per depth, except ResNet-110: the mean of 5 runs "
          "(6.61 \u00b1 0.16; its best run, 6.43, is the table's headline). gap: the median over our seeds minus that "
          "number, so compare a single seed's spread (runs.csv) with it, not only the median.",
          tuple(({"data.name": "cifar10", "model.depth": d, "model.shortcut": "A", "model.bottleneck": False,
                  "model.block": "post"}, n) for d, n in {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.61,
                                                          1202: 7.93}.items())),
    # Table 2's ResNet-110 column: two 3x3 convs per unit, shortcut A; ResNet-164: bottlenecks, projections (B).
    Table("He 2016 Table 2", ("experiment=he2016",), "median of 5",
          "He 2016 Table 2: CIFAR-10, the units of its Fig. 4, the median of 5 runs; gap: the median over our seeds "
          "minus that number.",
          _units(110, "A", False, {"post": 6.61, "bn_after_add": 8.17, "relu_before_add": 7.84, "relu_pre": 6.71,
                                   "pre": 6.37})
          + _units(164, "B", True, {"post": 5.93, "bn_after_add": 6.50, "relu_before_add": 6.14, "relu_pre": 5.91,
                                    "pre": 5.46})),
    Table("He 2016 Table 3", ("experiment=he2016",), "median of 5",
          "He 2016 Table 3: CIFAR-10 and CIFAR-100, original (post) vs pre-activation (pre) bottleneck units, the "
          "median of 5 runs (ResNet-1001's mean \u00b1 std, Table 4: 4.89 \u00b1 0.14 and 22.68 \u00b1 0.22); gap: "
          "the median over our seeds minus that number.",
          _units(1001, "B", True, {"post": 7.61, "pre": 4.92})
          + _units(164, "B", True, {"post": 25.16, "pre": 24.33}, "cifar100")
          + _units(1001, "B", True, {"post": 27.82, "pre": 22.71}, "cifar100")),
)


@functools.lru_cache(maxsize=None)
def recipe(overrides: tuple[str, ...]) -> dict:
    """A preset's resolved config, flattened (a Hydra composition, made once per process)."""
    from omegaconf import OmegaConf

    from depthstudy.config import compose

    return flatten(OmegaConf.to_container(compose(list(overrides)), resolve=True))


def _as_run(config: dict) -> dict:
    """A run's flattened config with what it lacks read as it ran: a key added to depthstudy after the run was made
    at its default (new keys default to the old behaviour), and block=bottleneck (the older spelling) as pre with
    model.bottleneck."""
    defaults = recipe(())
    flat = {**{k: v for k, v in defaults.items() if k.startswith(("model.", "optim."))}, **config}
    if flat.get("model.block") == "bottleneck":
        flat.update({"model.block": "pre", "model.bottleneck": True})
    return flat


@dataclass(frozen=True)
class Reference:
    number: float
    table: Table


def reference(config: dict) -> Reference | None:
    """The paper's number for runs of this config (flattened), where they follow the recipe of a table that has
    one; None elsewhere. A row that two tables share (He 2016's ResNet-164 on CIFAR-10) is the first table's."""
    run = _as_run(config)
    for table in TABLES:
        for row, number in table.rows:
            if any(run.get(k) != v for k, v in row.items()):
                continue
            paper = recipe(table.recipe)
            inert = inert_keys(run) & inert_keys({**paper, **row})
            if all(run.get(k) == v for k, v in paper.items() if defines_recipe(k) and k not in row and k not in inert):
                return Reference(number, table)
    return None


# The papers' CIFAR recipes report.md lists departures from: (its name, its preset, the axes its tables vary).
RECIPES = (("the paper's CIFAR-10 recipe", "he2015", ("model.depth", "model.shortcut")),
           ("He 2016's CIFAR recipe", "he2016", ("model.depth", "model.shortcut", "model.block", "model.bottleneck",
                                                 "data.name")))


def closest_recipe(configs: list[dict]) -> tuple[str, str, dict, tuple[str, ...]]:
    """The paper recipe these runs (flattened configs) depart from least, as (its name, its preset, the recipe
    flattened, its tables' axes): what report.md lists the departures from. He 2015's on a tie."""
    axes = {k for _, _, keys in RECIPES for k in keys}  # counted alike for both

    def departures(entry) -> int:
        paper = recipe((f"experiment={entry[1]}",))
        return sum(c.get(k) != v for c in configs for k, v in paper.items()
                   if defines_recipe(k) and k in c and k not in axes and k not in inert_keys(c))

    name, preset, axes = min(RECIPES, key=departures)
    return name, preset, recipe((f"experiment={preset}",)), axes
