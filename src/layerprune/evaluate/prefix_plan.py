"""How the shared-prefix scorer orders and batches lm-eval's log-likelihood requests.

Pure Python (no torch): requests -> groups (requests with one context) -> chunks (groups that
share a cached prefix and run together). ``evaluate/shared_prefix.py`` executes the plan.

A request is what stock ``HFLM._loglikelihood_tokens`` feeds the model: ``inp`` = (context +
continuation) left-truncated to ``max_length + 1`` tokens, last token dropped; the
log-probabilities of its last ``len(targets)`` positions are scored. Everything before those
positions is the request's *context* in this module's sense (the tokens that only need a KV
cache, never the LM head). Requests with equal contexts form a group (the options of one
question); requests with equal ``inp`` are scored from one model row (MMLU's " A"/" B"/...).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One log-likelihood request as the model sees it."""

    index: int  # position in the caller's request list
    inp: tuple[int, ...]  # model input (what stock HFLM runs)
    targets: tuple[int, ...]  # continuation tokens: predicted by the last len(targets) positions

    @property
    def start(self) -> int:
        """First scored position of ``inp``."""
        return len(self.inp) - len(self.targets)

    @property
    def context(self) -> tuple[int, ...]:
        return self.inp[: self.start]

    @property
    def scored(self) -> tuple[int, ...]:
        """The input tokens at the scored positions (one model row serves equal ones)."""
        return self.inp[self.start :]


def to_request(index: int, context: list[int], continuation: list[int], max_length: int) -> Request:
    """Stock HFLM's model input for ``(context, continuation)``, left truncation included."""
    whole = (context + continuation)[-(max_length + 1) :]
    return Request(index, tuple(whole[:-1]), tuple(continuation))


@dataclass
class Group:
    """Requests with one context; ``rows`` maps each distinct scored input to its requests."""

    context: tuple[int, ...]
    rows: dict[tuple[int, ...], list[Request]] = field(default_factory=dict)

    @property
    def folded(self) -> bool:
        """One distinct row: context and scored tokens run as one sequence, no second pass."""
        return len(self.rows) == 1

    @property
    def longest_row(self) -> int:
        return max(len(r) for r in self.rows)


def group_requests(requests: list[Request]) -> list[Group]:
    """Groups sorted by context tokens, so neighbours share the longest prefixes."""
    groups: dict[tuple[int, ...], Group] = {}
    for r in requests:
        g = groups.setdefault(r.context, Group(r.context))
        g.rows.setdefault(r.scored, []).append(r)
    return [groups[c] for c in sorted(groups)]


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common prefix."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class Chunk:
    """Groups that run together: their first ``prefix`` context tokens are shared and cached
    once (batch 1); each group's remaining context runs once (phase 1), then its rows (phase 2;
    folded groups are finished in phase 1)."""

    prefix: int
    groups: list[Group]

    @property
    def prefix_tokens(self) -> tuple[int, ...]:
        return self.groups[0].context[: self.prefix]

    def phase1_length(self) -> int:
        """Padded length of phase 1: remaining context (+ the row of folded groups)."""
        return max(
            len(g.context) - self.prefix + (g.longest_row if g.folded else 0) for g in self.groups
        )

    def phase2_rows(self) -> int:
        return sum(len(g.rows) for g in self.groups if not g.folded)

    def phase2_length(self) -> int:
        return max((g.longest_row for g in self.groups if not g.folded), default=0)

    def cost(self) -> int:
        """Token-rows held in the KV cache by its largest pass (the memory that bounds a chunk)."""
        total1 = self.prefix + self.phase1_length()
        return max(len(self.groups) * total1, self.phase2_rows() * (total1 + self.phase2_length()))


def plan_chunks(groups: list[Group], join_tokens: int, max_token_rows: int) -> list[Chunk]:
    """Consecutive groups joined into chunks, greedily.

    Joining a group to the current chunk can shorten the chunk's shared prefix, so that every
    group already in it recomputes the difference; it joins when that costs at most
    ``join_tokens`` token positions (about what one extra model call costs) and the chunk stays
    within ``max_token_rows`` (batch rows x sequence length, the KV cache's size).
    """
    chunks: list[Chunk] = []
    for g in groups:
        if chunks:
            c = chunks[-1]
            shared = min(c.prefix, common_prefix(c.groups[-1].context, g.context))
            recomputed = (c.prefix - shared) * len(c.groups)
            candidate = Chunk(shared, [*c.groups, g])
            if recomputed <= join_tokens and candidate.cost() <= max_token_rows:
                chunks[-1] = candidate
                continue
        chunks.append(Chunk(len(g.context), [g]))
    return chunks
