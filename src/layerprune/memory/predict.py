"""Each stage's peak memory, predicted from the config before anything is loaded.

A stage's peak is what stays resident from earlier stages (the loaded model, its copies),
plus what the stage's own code allocates at its worst moment. The second part is not a
formula: the stage's code (the scan, the search evaluator, the training loop with its
optimiser and checkpointing, the perplexity and scorer forwards, the speed prefill) runs on
the model instantiated on the meta device (``simulate.py``) with the job's batch shapes, and
every tensor it allocates is counted. What the meta device cannot run is added by hand, each
from the code that allocates it: nf4 weights (``nf4_bytes``), the KV cache of a decode, the
scorer's head buffers and its prefix cache (an estimate: prompt lengths come from the data).

Bytes are whole-job figures; a model split over ``gpus`` devices (``model.device_map``) puts
``1/gpus`` of the weights and of the per-block memory on each, and the rest (the logits) on one.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from layerprune.config import Config, DType
from layerprune.memory.shapes import Shapes, model_and_shapes
from layerprune.memory.simulate import meta_run, tokens
from layerprune.models.adapter import BlockAdapter

SHOT_TOKENS = 128  # assumed tokens per few-shot example (MMLU's are ~100-150)
SCORER_ROWS = 16  # assumed rows per scorer call sharing one few-shot prefix


@dataclass
class StagePeak:
    """One stage's predicted peak: ``bytes`` in all, ``per_device`` on the fullest device, and
    what it is made of (``parts``: name -> bytes)."""

    stage: str
    bytes: int
    per_device: int
    parts: dict[str, int] = field(default_factory=dict)
    resident: int = 0  # the part of ``bytes`` that a split spreads over its devices

    def on(self, gpus: int) -> int:
        """Bytes on the fullest of ``gpus`` devices over which the model is split."""
        return self.resident // gpus + self.bytes - self.resident


@dataclass(frozen=True)
class Target:
    """Where the job runs: ``cuda`` (``gpus`` devices when the model is split) or ``cpu``."""

    kind: str = "cpu"
    gpus: int = 1

    @property
    def device(self) -> torch.device:
        return torch.device(self.kind)


def job_dtype(cfg: Config, target: Target) -> torch.dtype:
    """The dtype the job loads in (``models/load.resolve_dtype``)."""
    if cfg.model.dtype == DType.auto:
        return torch.bfloat16 if target.kind == "cuda" else torch.float32
    return getattr(torch, cfg.model.dtype.value)


def nf4_bytes(shapes: Shapes, blocks: list[int] | None = None) -> int:
    """Bytes of the model with its block linears as bitsandbytes nf4 with double quantisation
    (4 bits per weight, an 8-bit absmax per 64 weights, a float32 scale per 256 absmax) and
    everything else (embeddings, head, norms) in the compute dtype."""
    keep = range(shapes.blocks) if blocks is None else blocks
    total = shapes.other_bytes
    for i in keep:
        n = shapes.block_linear[i]
        total += shapes.block_bytes[i] - n * shapes.dtype_bytes + n // 2 + n // 64 + n // 4096
    return total


def weight_bytes(shapes: Shapes, four_bit: bool, blocks: list[int] | None = None) -> int:
    if four_bit:
        return nf4_bytes(shapes, blocks)
    keep = range(shapes.blocks) if blocks is None else blocks
    return shapes.other_bytes + sum(shapes.block_bytes[i] for i in keep)


def kept_blocks(cfg: Config, shapes: Shapes) -> tuple[list[int], list[int]]:
    """``(kept blocks, blocks whose attention alone is removed)`` after pruning: the count the
    method would remove, taken from the end (block methods; every block weighs the same) or,
    for sublayer methods, attention sublayers first (the lightest: the heaviest pruned model)."""
    method, n = cfg.pruning_method, cfg.pruning_method.count(cfg.fraction, shapes.blocks)
    if getattr(method, "family", "block") == "sublayer" and getattr(
        method, "granularity", "sublayer"
    ) in ("sublayer", "attention"):
        gone_attn = list(range(shapes.blocks))[-n:] if n else []
        gone = []
        if n > shapes.blocks:  # then whole blocks go too
            gone = list(range(shapes.blocks))[-(n - shapes.blocks) :]
            gone_attn = [i for i in range(shapes.blocks) if i not in gone]
        return [i for i in range(shapes.blocks) if i not in gone], gone_attn
    if getattr(method, "family", "block") == "sublayer":  # mlp or block candidates
        n = n if getattr(method, "granularity", "") == "block" else n // 2
    gone = list(range(shapes.blocks))[shapes.blocks - n :] if n else []
    return [i for i in range(shapes.blocks) if i not in gone], []


def pruned_meta(model: torch.nn.Module, kept: list[int], attn_gone: list[int]) -> torch.nn.Module:
    """A deep copy of the meta model with the blocks (and attention sublayers) removed."""
    from layerprune.surgery.skip import skip_sublayers

    out = copy.deepcopy(model)
    adapter = BlockAdapter.for_model(out)
    if attn_gone:
        skip_sublayers(adapter.blocks(out), (adapter.attn_name, adapter.mlp_name), attn_gone, [])
    adapter.keep_blocks(out, kept)
    return out


_SIMS: dict[tuple, int] = {}  # simulated peaks by (part, config): ``Predictor.sim``


class Predictor:
    """The stages of one job (``predict``)."""

    def __init__(self, cfg: Config, target: Target):
        self.cfg, self.target = cfg, target
        self.dtype = job_dtype(cfg, target)
        self.four_bit = bool(cfg.model.load_in_4bit)
        self.model, self.shapes = model_and_shapes(cfg.model, self.dtype)
        self.kept, self.attn_gone = kept_blocks(cfg, self.shapes)
        self.gpus = target.gpus if cfg.model.device_map else 1
        self._sim_key = (
            repr(dataclasses.replace(cfg.model, load_in_4bit=False)),
            repr(cfg),
            target.kind,
        )
        self.full = weight_bytes(self.shapes, self.four_bit)
        self.pruned = weight_bytes(self.shapes, self.four_bit, self.kept) - sum(
            self.shapes.attention_bytes[i] for i in self.attn_gone
        )

    # -- helpers -----------------------------------------------------------------------------

    def peak(self, stage: str, resident: dict[str, int], work: dict[str, int]) -> StagePeak:
        """A ``StagePeak``: resident parts (weights, spread over a split's devices) and working
        parts (all on the fullest device: conservative)."""
        held = sum(resident.values())
        total = held + sum(work.values())
        peak = StagePeak(stage, total, 0, {**resident, **work}, held)
        peak.per_device = peak.on(self.gpus)
        return peak

    def sim(self, fn, part: str = "") -> int:
        """Bytes ``fn`` allocates at its peak, run on the meta device; with ``part`` (what is
        run), remembered for configs that differ only in the weights' storage (nf4 runs the
        same code in the compute dtype)."""
        key = (part, self._sim_key) if part else None
        if key in _SIMS:
            return _SIMS[key]
        with meta_run() as run:
            fn()
        if key:
            _SIMS[key] = run.peak
        return run.peak

    def _pruned_model(self) -> torch.nn.Module:
        return pruned_meta(self.model, self.kept, self.attn_gone)

    def _dequant(self) -> int:
        """nf4: one block linear dequantised to the compute dtype during its matmul."""
        if not self.four_bit:
            return 0
        block = self.model.model.layers[0] if hasattr(self.model, "model") else None
        sizes = [m.weight.numel() for m in (block or self.model).modules() if _linear(m)]
        return max(sizes, default=0) * self.shapes.dtype_bytes

    # -- stages ------------------------------------------------------------------------------

    def load(self) -> StagePeak:
        return self.peak("load", {"weights": self.full}, {"dequantise": self._dequant()})

    def select(self) -> StagePeak | None:
        method = self.cfg.pruning_method
        count = method.count(self.cfg.fraction, self.shapes.blocks)
        if count == 0 or method.needs is None:
            return None
        c = self.cfg.calibration
        model, adapter = self.model, BlockAdapter.for_model(self.model)
        if method.needs == "scan":
            from layerprune.data.calibration import Batch
            from layerprune.scan.residual import scan_model

            ids = tokens(min(c.batch_size, c.num_sequences), c.seq_len)
            batch = [Batch(ids, torch.ones_like(ids))]
            work = self.sim(lambda: scan_model(model, adapter, batch, progress=False), "scan")
            return self.peak("scan", {"weights": self.full}, {"scan": work + self._dequant()})
        return self.peak("search", {"weights": self.full}, {"search": self._search(count)})

    def _search(self, count: int) -> int:
        """The search evaluator: built (its deep copy, references and cached block inputs),
        then one greedy step's first candidates and a commit."""
        from layerprune.methods.search import candidates

        c, method = self.cfg.calibration, self.cfg.pruning_method
        sizes = [
            min(c.batch_size, c.num_sequences - i) for i in range(0, c.num_sequences, c.batch_size)
        ]
        batches = [tokens(b, c.seq_len) for b in sizes]
        adapter = BlockAdapter.for_model(self.model)
        granularity = getattr(method, "granularity", "block")
        metric = self.cfg.metric.name

        def run() -> None:
            ev = method.search_evaluator(self.model, adapter, batches, metric)
            cands = candidates(self.shapes.blocks, granularity)
            ev.scores(cands[:2])
            ev.commit(cands[0])

        return self.sim(run, "search") + self._dequant()

    def heal(self) -> StagePeak | None:
        healer = self.cfg.healing
        if not healer.active or not hasattr(healer, "train"):
            return None
        name = type(healer).__name__
        quant = name == "QLoRA" or self.four_bit
        base = weight_bytes(self.shapes, True, self.kept) if quant else self.pruned
        resident = {"pruned weights" if not quant else "pruned weights (nf4)": base}
        if name == "QLoRA":  # non-4-bit parameters in float32 (prepare_model_for_kbit_training)
            resident["float32 embeddings, head, norms"] = self.shapes.other_bytes * (
                4 // self.shapes.dtype_bytes - 1
            )
        work = {"training step": self._train_step(healer, quant)}
        work["dequantise"] = self._dequant() if quant else 0
        if getattr(healer, "needs_teacher", False) and not getattr(healer, "teacher_topk", 0):
            four = getattr(healer, "teacher_4bit", False) or self.four_bit
            resident["teacher"] = weight_bytes(self.shapes, four)
        elif getattr(healer, "teacher_topk", 0):
            k = healer.teacher_topk
            rows = healer.steps * healer.batch_size * healer.grad_accum
            resident["teacher top-k (float32 + int32)"] = rows * healer.seq_len * k * 8
        if self.target.kind == "cuda":  # AdamW's foreach step: one more copy of the states
            work["foreach step"] = self._trainable()
        train = self.peak("heal", resident, work)
        # after training (``finish``): the LoRA model merged into a deep copy, teacher freed
        merged = getattr(healer, "eval_merged", False) or getattr(healer, "merge", False)
        if name in ("LoRA", "KD") and merged and getattr(healer, "trainable", "lora") == "lora":
            copies = {"pruned weights": self.pruned, "merged copy": self.pruned}
            finish = self.peak("heal", copies, {"LoRA weights": self._trainable()})
            return max(train, finish, key=lambda p: p.bytes)
        return train

    def _train_step(self, healer, quant: bool) -> int:
        """Two optimiser steps of the healer's own training loop on the meta pruned model
        (student, LoRA, checkpointing, loss, backward, clipping, AdamW), LoRA weights, grads
        and optimiser states included."""
        from layerprune.heal.base import HealingText

        steps = 2
        h = dataclasses.replace(healer, steps=steps, warmup_steps=1, checkpoint_every=0)
        rows = steps * h.batch_size * h.grad_accum
        text = HealingText(torch.zeros(rows, h.seq_len, dtype=torch.long), "meta")
        pruned = self._pruned_model()  # resident before the stage: counted apart
        if type(healer).__name__ == "QLoRA":
            _kbit_cast(pruned)  # counted apart too (the stage's resident parts)

        def run() -> None:
            student = self.make_student(h, pruned)
            if getattr(h, "needs_teacher", False):
                h._kept = list(range(len(self.kept)))
                h._teacher, h._topk = None, None
                if h.teacher_topk:
                    k = h.teacher_topk
                    h._topk = (
                        torch.zeros(rows, h.seq_len, k, device="meta"),
                        torch.zeros(rows, h.seq_len, k, dtype=torch.int32, device="meta"),
                    )
                else:
                    h._teacher = self.model  # resident, counted apart
            with tempfile.TemporaryDirectory() as tmp:
                h.train(student, text, Path(tmp) / "loss.csv", None, 0)

        return self.sim(run, "heal")

    def _trainable(self) -> int:
        """Bytes of the healer's trainable parameters."""
        student = self._student(self.cfg.healing)
        return sum(p.numel() * p.element_size() for p in student.parameters() if p.requires_grad)

    def evaluate(self) -> StagePeak:
        healer = self.cfg.healing
        name = type(healer).__name__ if healer.active else "none"
        quant = name == "QLoRA" or self.four_bit
        resident = {"model": weight_bytes(self.shapes, True, self.kept) if quant else self.pruned}
        merged = getattr(healer, "eval_merged", False)
        if name in ("LoRA", "KD") and merged and getattr(healer, "trainable", "lora") == "lora":
            resident["merged copy"] = self.pruned
        resident.update(self._after_training())
        model = self._pruned_model()
        work = {
            "forward": max(
                [0, *(self._perplexity(p, model) for p in self.cfg.benchmark.perplexity)]
            )
        }
        if self.cfg.benchmark.tasks:
            work["forward"] = max(work["forward"], self._scorer(model))
            if self.cfg.scorer.name == "shared":
                work["scorer head buffers"] = self._head_buffers()
        work["dequantise"] = self._dequant()
        return self.peak("evaluate", resident, work)

    def _after_training(self) -> dict[str, int]:
        """What training leaves on the trained model: LoRA weights, and the last step's
        gradients of every float32 trainable weight (``zero_grad`` runs before a step, not
        after; a half-precision master copy drops its gradients when cast back)."""
        healer = self.cfg.healing
        if not healer.active or not hasattr(healer, "train"):
            return {}
        lora, grads = 0, 0
        for n, p in self._student(healer).named_parameters():
            if p.requires_grad:
                size = p.numel() * p.element_size()
                lora += size if "lora_" in n else 0
                grads += size if p.dtype == torch.float32 else 0
        return {"LoRA weights": lora, "gradients kept after training": grads}

    def _student(self, healer) -> torch.nn.Module:
        """The healer's trainable model, built once (``make_student``)."""
        if getattr(self, "_student_model", None) is None:
            self._student_model = self.make_student(healer)
        return self._student_model

    def make_student(self, healer, model: torch.nn.Module | None = None) -> torch.nn.Module:
        """The healer's trainable model on a meta copy of the pruned model; QLoRA's 4-bit
        base as its compute-dtype stand-in, with the parameters ``prepare_model_for_kbit_
        training`` casts to float32 (all but the block linears) cast."""
        model = model if model is not None else self._pruned_model()
        if type(healer).__name__ == "QLoRA":
            return healer._lora(_kbit_cast(model))
        adapter = BlockAdapter.for_model(model)
        job = SimpleNamespace(lm=SimpleNamespace(model=model, adapter=adapter), model=model)
        return healer.student(job)

    def _perplexity(self, p, model) -> int:
        from layerprune.evaluate.perplexity import HEAD_CHUNK, _token_nll

        ids = tokens(p.batch_size, p.context_length)
        return self.sim(
            lambda: torch.no_grad()(_token_nll)(model, ids, HEAD_CHUNK), f"ppl {tuple(ids.shape)}"
        )

    def _head_buffers(self) -> int:
        """The shared scorer's float32 logits and log-probability buffers, kept between calls,
        ``HEAD_CHUNK`` logits each (``SharedPrefixLM._head_buffers``); a half-precision head
        makes its logits and their float32 log-softmax per flush instead."""
        from layerprune.evaluate.perplexity import HEAD_CHUNK

        rows = max(16, HEAD_CHUNK // self.shapes.vocab)
        if self.dtype == torch.float32 and not self.four_bit:
            return 2 * rows * self.shapes.vocab * 4
        return rows * self.shapes.vocab * (self.shapes.dtype_bytes + 4)  # logits, float32 logp

    def _scorer(self, model) -> int:
        """One decoder call of the scorer: ``batch_tokens`` positions with their KV cache, on a
        few-shot prefix expanded to each row (an estimate: ``SHOT_TOKENS`` per shot,
        ``SCORER_ROWS`` rows, as many copies as the profile's ``prefix_cache_bytes`` allow); stock: lm-eval's batch of full logits."""
        from layerprune.evaluate.shared_prefix import profile_for

        shots = max(t.num_fewshot for t in self.cfg.benchmark.tasks)
        if self.cfg.scorer.name != "shared":
            batch = getattr(self.cfg.scorer, "batch_size", 0) or 16
            ids = tokens(batch, 512)
            return self.sim(
                lambda: torch.no_grad()(model)(input_ids=ids).logits.float().log_softmax(-1)
            )
        prof = profile_for(self.target.kind)
        total = getattr(self.cfg.scorer, "batch_tokens", None) or prof.batch_tokens
        rows = max(1, min(SCORER_ROWS, total // 64))
        width = max(1, total // rows)
        prefix = shots * SHOT_TOKENS
        kv = len(self.kept) * self.shapes.kv_bytes_per_token // max(self.shapes.blocks, 1)
        ids = tokens(rows, width)
        decoder = model.get_decoder()

        def run() -> None:
            with torch.inference_mode():
                decoder(input_ids=ids, use_cache=True)

        # the prefix's KV copied to each row, at most ``prefix_cache_bytes`` of copies a call
        copies = min(rows, max(1, prof.prefix_cache_bytes // max(1, prefix * kv)))
        return self.sim(run, "scorer") + copies * prefix * kv

    def speed(self) -> StagePeak | None:
        s = self.cfg.speed
        if not s.enabled or self.cfg.fraction == 0 or self.cfg.pruning_method.name == "none":
            return None
        evaluated = self.evaluate().parts
        working = ("forward", "scorer head buffers", "dequantise")
        resident = {k: v for k, v in evaluated.items() if k not in working}
        resident["unpruned model"] = self.full
        work = 0
        kv = self.shapes.kv_bytes_per_token
        for b in s.prefill_batches:
            ids = tokens(b, s.prefill_length)
            work = max(work, self.sim(lambda ids=ids: _prefill(self.model, ids), f"prefill {b}"))
        for b in s.decode_batches:
            ids = tokens(b, s.prompt_length)
            step = self.sim(lambda ids=ids: _prefill(self.model, ids), f"prompt {b}")
            work = max(work, step + b * (s.prompt_length + s.new_tokens) * kv)
        return self.peak("speed", resident, {"prefill / decode": work + self._dequant()})

    def stages(self) -> Iterator[StagePeak]:
        """The job's stages in order, each predicted when asked for."""
        for stage in (self.load, self.select, self.heal, self.evaluate, self.speed):
            peak = stage()
            if peak is not None:
                yield peak

    def stage(self, name: str) -> StagePeak | None:
        """One stage (``scan`` and ``search`` are the select stage's two kinds)."""
        method = {"scan": self.select, "search": self.select}.get(name) or getattr(self, name)
        peak = method()
        return peak if peak is not None and peak.stage == name else None


def _prefill(model, ids) -> None:
    with torch.inference_mode():
        model(input_ids=ids, use_cache=True, logits_to_keep=1)


def _kbit_cast(model: torch.nn.Module) -> torch.nn.Module:
    """What ``prepare_model_for_kbit_training`` does to a 4-bit model's other parameters:
    float32 (a no-op for those already float32)."""
    for n, p in model.named_parameters():
        if not _in_block_linear(model, n):
            p.data = p.data.float()
    return model


def _linear(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.Linear)


def _in_block_linear(model: torch.nn.Module, name: str) -> bool:
    """Whether parameter ``name`` is a block's linear weight (the part nf4 quantises)."""
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return _linear(module) and name.endswith("weight") and ".layers." in f".{name}"


def predict(cfg: Config, target: Target | None = None) -> list[StagePeak]:
    """Each stage's predicted peak for ``cfg`` on ``target`` (module doc)."""
    return list(Predictor(cfg, target or Target()).stages())


def upper_bound(cfg: Config, target: Target | None = None) -> int:
    """A quick, generous bound on every stage's peak from the shapes alone (no simulation):
    four copies of the weights (the model, a search or merged copy, the teacher or the
    unpruned speed reference, one spare), the scorer's head buffers, and the largest of:
    training, 200 bytes x (hidden + intermediate) per block per token (measured: ~26h + 18I in
    bf16) + 64 bytes per vocabulary entry (logits, their log-softmax and gradients); the
    scan's float32 states; the search's cached inputs and reference log-probabilities; an
    inference call's KV cache and temporaries. The preflight skips the exact model when this
    fits easily."""
    target = target or Target()
    model, shapes = model_and_shapes(cfg.model, job_dtype(cfg, target))
    text = model.config.get_text_config()
    width, layers, vocab = text.hidden_size + text.intermediate_size, shapes.blocks, shapes.vocab
    c, h = cfg.calibration, cfg.healing
    heal = getattr(h, "batch_size", 0) * getattr(h, "seq_len", 0)
    scan = min(c.batch_size, c.num_sequences) * c.seq_len * (layers + 1) * text.hidden_size * 16
    search = c.num_sequences * c.seq_len * (layers * text.hidden_size + vocab) * 4
    calls = [p.batch_size * p.context_length for p in cfg.benchmark.perplexity]
    # the scorer's padded tokens per call (evaluate/shared_prefix.PROFILES)
    calls.append(
        getattr(cfg.scorer, "batch_tokens", None) or (16384 if target.kind == "cuda" else 1024)
    )
    infer = max(calls) * (shapes.kv_bytes_per_token + 160 * width)
    work = max(heal * (layers * 200 * width + 64 * vocab), scan, search, infer)
    head = 2 * 4 * max(16 * vocab, 1 << 26)
    return 4 * weight_bytes(shapes, False) + head + work
