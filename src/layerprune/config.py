"""Typed schemas of the config tree, registered in Hydra's ConfigStore.

The root schema types every group, so a misspelled key or a value of the wrong type fails
when Hydra composes the config, naming the key. Choices are Enums (an unknown value lists the
valid ones). Checks that types cannot express (ranges, combinations) live in ``__post_init__``
and run in ``validate()``, before anything is loaded or written.

The plug-in groups (``pruning_method``, ``healing``, ``scorer``, ``tracking``) are nodes with a
``_target_`` class; ``validate()`` builds them into their objects (``plugins.build``), typed
by their own dataclass fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from layerprune.errors import LayerpruneError


class ModelSource(str, Enum):
    hub = "hub"  # a Hugging Face Hub id (needs the Hub)
    path = "path"  # a local HF folder
    asset = "asset"  # a model built by ``layerprune-assets``
    random = "random"  # random weights from a seeded config (tests)


class DType(str, Enum):
    auto = "auto"  # bfloat16 on CUDA, float32 on CPU
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class TextSource(str, Enum):
    c4 = "c4"  # offline C4 documents (asset "text")
    wiki = "wiki"  # offline Wikipedia articles (asset "text")
    hub = "hub"  # a Hub text dataset (or a local folder in the Hub layout): the ``hub`` block


class DataSource(str, Enum):
    offline = "offline"  # stock lm-eval tasks reading the asset cache (no Hub)
    hub = "hub"  # stock lm-eval tasks as shipped (needs the Hub)


class TextSplit(str, Enum):
    calibration = "calibration"
    healing = "healing"
    evaluation = "evaluation"


@dataclass
class RandomModelConfig:
    """Shape of a random-weight model (tests): small enough to run in milliseconds."""

    family: str = "llama"  # llama | qwen2 | mistral | gemma3_text
    num_hidden_layers: int = 8
    hidden_size: int = 64
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 272  # >= the byte-level test tokenizer (257 tokens)
    seed: int = 0

    def __post_init__(self) -> None:
        families = ("llama", "qwen2", "mistral", "gemma3_text")
        if self.family not in families:
            raise LayerpruneError(
                f"model.random.family={self.family!r}: expected one of {families}"
            )


@dataclass
class ModelConfig:
    name: str = MISSING  # short name for run dirs and tables
    # what the model is, for tables and figures: base / instruct / coder, where the weights
    # come from and their quantisation before dequantising (empty: the name)
    title: str = ""
    source: ModelSource = ModelSource.hub
    id: str = MISSING  # Hub id, folder, or asset name
    revision: str | None = None
    dtype: DType = DType.auto
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    device_map: str | None = None  # e.g. "auto" to shard over all GPUs (accelerate)
    load_in_4bit: bool = False  # bitsandbytes nf4
    trust_remote_code: bool = False
    random: RandomModelConfig | None = None

    def __post_init__(self) -> None:
        self.source, self.dtype = ModelSource(self.source), DType(self.dtype)  # str -> Enum
        if self.source == ModelSource.random and self.random is None:
            raise LayerpruneError("model.source=random needs a model.random block")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
            raise LayerpruneError(f"model.device={dev!r}: expected auto, cpu, cuda or cuda:N")


@dataclass
class HubRange:
    """Which documents of a Hub dataset one use reads: ``take`` rows of ``split`` after the
    first ``skip`` (streamed in the dataset's order)."""

    split: str = "train"
    skip: int = 0
    take: int = 1000

    def __post_init__(self) -> None:
        if self.skip < 0 or self.take < 1:
            raise LayerpruneError(f"hub range {self.split}: skip >= 0 and take >= 1 required")

    def overlaps(self, other: HubRange) -> bool:
        """Whether the two ranges share a document."""
        return (
            self.split == other.split
            and self.skip < other.skip + other.take
            and other.skip < self.skip + self.take
        )


@dataclass
class HubText:
    """A Hub text dataset read with ``datasets`` streaming (``load_dataset(path, name,
    split=..., streaming=True)``): a Hub id, or a local folder in the Hub layout. Each use
    (calibration, healing, evaluation) reads its own range; ranges must be disjoint."""

    path: str = MISSING  # e.g. allenai/c4
    name: str | None = None  # the dataset config, e.g. en
    text_field: str = "text"
    label: str = ""  # short name for metrics and logs (empty: hub-<last part of path>)
    calibration: HubRange = field(default_factory=HubRange)
    healing: HubRange = field(default_factory=lambda: HubRange(skip=1000, take=100_000))
    evaluation: HubRange = field(default_factory=lambda: HubRange(split="validation"))

    def __post_init__(self) -> None:
        uses = [(u.value, getattr(self, u.value)) for u in TextSplit]
        for i, (a, ra) in enumerate(uses):
            for b, rb in uses[i + 1 :]:
                if ra.overlaps(rb):
                    raise LayerpruneError(
                        f"hub text {self.path}: the {a} and {b} ranges overlap in split "
                        f"{ra.split!r}; give them disjoint skip/take ranges or different splits"
                    )

    def range(self, use: TextSplit) -> HubRange:
        return getattr(self, TextSplit(use).value)


def check_text_disjoint(calibration: CalibrationConfig, perplexity: list[PerplexityConfig]) -> None:
    """The held-out text of a perplexity entry on the calibration's Hub dataset must miss the
    calibration and healing ranges (offline splits are disjoint by construction)."""
    ours = calibration.hub
    for p in perplexity:
        if ours is None or p.hub is None or (p.hub.path, p.hub.name) != (ours.path, ours.name):
            continue
        for use in (TextSplit.calibration, TextSplit.healing):
            if p.hub.evaluation.overlaps(ours.range(use)):
                raise LayerpruneError(
                    f"perplexity on {ours.path} reads documents of the calibration's {use.value} "
                    "range; give perplexity.hub.evaluation a disjoint skip/take or split"
                )


def _check_hub(where: str, source: TextSource, hub: HubText | None) -> None:
    """``source: hub`` needs a ``hub`` block, and a ``hub`` block is read only with it."""
    if source == TextSource.hub and hub is None:
        raise LayerpruneError(f"{where}.source=hub needs a {where}.hub block (path, name, ...)")
    if source != TextSource.hub and hub is not None:
        raise LayerpruneError(
            f"{where}.hub is set but {where}.source={source.value}; set {where}.source=hub"
        )


@dataclass
class CalibrationConfig:
    """Text for the scan (and, from its ``healing`` split, for healing)."""

    source: TextSource = TextSource.c4
    split: TextSplit = TextSplit.calibration
    num_sequences: int = 32
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    # fewer sequences than num_sequences when the text holds fewer (else an error); the
    # number used is logged and kept with the scan
    allow_fewer: bool = False
    hub: HubText | None = None  # the dataset when source=hub

    def __post_init__(self) -> None:
        self.source, self.split = TextSource(self.source), TextSplit(self.split)
        for key in ("num_sequences", "seq_len", "batch_size"):
            if getattr(self, key) < 1:
                raise LayerpruneError(f"calibration.{key} must be >= 1, got {getattr(self, key)}")
        _check_hub("calibration", self.source, self.hub)


class TokenReduction(str, Enum):
    last = "last"  # the last non-pad token of each sequence (Gromov et al.)
    mean = "mean"  # all non-pad tokens


@dataclass
class MetricConfig:
    """What the method compares; the names a method accepts are its own (``metrics`` of its
    plug-in class, checked in ``Config``); ``default`` is the method's paper setting."""

    name: str = "angular"
    reduction: TokenReduction = TokenReduction.last

    def __post_init__(self) -> None:
        self.reduction = TokenReduction(self.reduction)


@dataclass
class PerplexityConfig:
    """Token perplexity on held-out text: documents joined with EOS, cut into windows."""

    source: TextSource = TextSource.wiki
    split: TextSplit = TextSplit.evaluation
    context_length: int = 512
    stride: int = 512  # < context_length scores each window's last ``stride`` tokens only
    max_tokens: int = 16384  # 0 = the whole split
    batch_size: int = 4
    hub: HubText | None = None  # the dataset when source=hub (its evaluation range)

    def __post_init__(self) -> None:
        self.source, self.split = TextSource(self.source), TextSplit(self.split)
        _check_hub("perplexity", self.source, self.hub)
        if not 1 <= self.stride <= self.context_length:
            raise LayerpruneError(
                f"perplexity stride {self.stride} must be in [1, context_length="
                f"{self.context_length}]"
            )
        if self.split != TextSplit.evaluation:
            raise LayerpruneError("perplexity must use the evaluation split (held-out text)")


@dataclass
class TaskConfig:
    """One stock lm-eval task or group (``mmlu``)."""

    name: str = MISSING
    num_fewshot: int = 0
    limit: int | None = None  # items per task (per subject for mmlu); None = all

    def __post_init__(self) -> None:
        if self.num_fewshot < 0 or (self.limit is not None and self.limit < 1):
            raise LayerpruneError(f"task {self.name}: num_fewshot >= 0 and limit >= 1 required")


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    data: DataSource = DataSource.offline
    tasks: list[TaskConfig] = field(default_factory=list)
    perplexity: list[PerplexityConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        from layerprune.assets.benchmarks import BENCHMARKS

        self.data = DataSource(self.data)
        for t in self.tasks:
            offline = BENCHMARKS.get(t.name) if self.data == DataSource.offline else None
            if offline and t.num_fewshot > 0 and not offline.fewshot_ok:
                raise LayerpruneError(
                    f"{t.name}: the offline data has no train split, so {t.num_fewshot}-shot "
                    "examples would come from the evaluated split; use num_fewshot=0 or "
                    "benchmark.data=hub"
                )


@dataclass
class SpeedConfig:
    """What the speed stage measures, pruned against unpruned in one process (``speed.py``);
    empty batch lists measure the exact structure figures only."""

    name: str = "default"
    enabled: bool = True
    prefill_batches: list[int] = field(default_factory=lambda: [1, 4])
    prefill_length: int = 256
    decode_batches: list[int] = field(default_factory=lambda: [1, 8])
    prompt_length: int = 32  # the fixed prompt before decoding
    new_tokens: int = 32  # forced (min_new_tokens = max_new_tokens)
    min_run_time: float = 0.3  # seconds per timed setting (torch.utils.benchmark)
    rounds: int = 2  # unpruned / pruned alternations per setting

    def __post_init__(self) -> None:
        sizes = [*self.prefill_batches, *self.decode_batches, self.prefill_length]
        if min(sizes + [self.prompt_length, self.rounds]) < 1 or self.new_tokens < 2:
            raise LayerpruneError(
                "speed: batches, lengths and rounds must be >= 1, new_tokens >= 2"
            )


@dataclass
class Config:
    """The root: one job of scan -> prune -> heal -> evaluate."""

    model: ModelConfig = MISSING
    calibration: CalibrationConfig = MISSING
    # plug-ins: {_target_: <class>, ...its settings}; validate() turns each into its object
    pruning_method: Any = MISSING  # a layerprune.methods.base.PruningMethod
    metric: MetricConfig = MISSING
    healing: Any = MISSING  # a layerprune.heal.base.Healer
    benchmark: BenchmarkConfig = MISSING
    scorer: Any = MISSING  # a layerprune.evaluate.scorers.Scorer
    speed: SpeedConfig = MISSING
    tracking: Any = MISSING  # a layerprune.tracking.Tracker
    experiment: str | None = None  # set by conf/experiment files; used to filter reports
    fraction: float = 0.0  # of blocks (block methods) or of sublayers (FinerCut)
    seed: int = 0
    save_checkpoint: bool = False  # save the pruned model (HF folder + pruning_plan.json)
    store_dir: str = "outputs/runs"  # run store: finished jobs by config hash
    force: bool = False  # rerun a job even if the store has it
    memory_check: bool = True  # preflight stops a job whose predicted peak exceeds the device

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise LayerpruneError(f"fraction={self.fraction} is out of range: expected 0 <= f < 1")
        from layerprune.evaluate.scorers import Scorer
        from layerprune.heal.base import Healer
        from layerprune.methods.base import PruningMethod
        from layerprune.plugins import build
        from layerprune.tracking import Tracker

        method = self.pruning_method = build(self.pruning_method, PruningMethod, "pruning_method")
        self.healing = build(self.healing, Healer, "healing")
        self.scorer = build(self.scorer, Scorer, "scorer")
        self.tracking = build(self.tracking, Tracker, "tracking")
        if self.metric.name == "default" and method.default_metric:
            name, reduction = method.default_metric
            self.metric = MetricConfig(name, TokenReduction(reduction))
        method.check_metric(self.metric.name)
        check_text_disjoint(self.calibration, self.benchmark.perplexity)


def register() -> None:
    """Put the root schema into Hydra's ConfigStore as ``base_config`` (conf/config.yaml's
    first default); it types every group, so group files need no schema of their own."""
    ConfigStore.instance().store(name="base_config", node=Config)


def validate(cfg: DictConfig) -> Config:
    """Turn a composed config into checked dataclasses; raises ``LayerpruneError`` on bad values."""
    try:
        return OmegaConf.to_object(cfg)  # runs every __post_init__
    except LayerpruneError:
        raise
    except Exception as e:  # omegaconf errors carry the key: keep their first line
        raise LayerpruneError(str(e).splitlines()[0]) from e
