"""How the shared-prefix scorer orders and batches lm-eval's log-likelihood requests.

Pure Python (no torch): requests -> groups (requests with one context) -> chunks (groups that
share a cached prefix and run together) -> one packed row per group (its context, then its
options as a token trie: what options share, such as PIQA's two near-identical solutions, runs
once; under a tree mask) -> batches of rows, one decoder call each. ``evaluate/shared_prefix.py``
executes the plan.

A request is what stock ``HFLM._loglikelihood_tokens`` feeds the model: ``inp`` = (context +
continuation) left-truncated to ``max_length + 1`` tokens, last token dropped; the
log-probabilities of its last ``len(targets)`` positions are scored. Everything before those
positions is the request's *context* in this module's sense (the tokens that only need a KV
cache, never the LM head). Requests with equal contexts form a group (the options of one
question); requests with equal ``inp`` are scored from one model row (MMLU's " A"/" B"/...).

Rounding: stock runs each option right after its context; in a packed row an option's own
tokens follow its siblings', so their keys sit at other indices. Float32 attention (SDPA on an
AVX-512 CPU) gives bitwise the same output for keys shifted by a multiple of 16 and rounds
differently otherwise (``benchmarks/attention_alignment.py``): up to 1.1e-4 on PIQA's long
options. The runs that an option of ``ALIGN_MIN`` tokens or more reads therefore start at a
multiple of ``ALIGN`` tokens from where stock has their first token, after masked gap tokens.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

ALIGN = 16  # measured on AVX-512 (16 float32 lanes); also a multiple of narrower SIMD widths
ALIGN_MIN = 32  # shorter options round little: not worth up to 15 gap tokens each


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
        """One distinct row: context and scored tokens are one causal sequence (no tree mask)."""
        return len(self.rows) == 1


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
    once (batch 1); each group then runs as one packed row (``pack``) on top of that cache."""

    prefix: int
    groups: list[Group]

    @property
    def prefix_tokens(self) -> tuple[int, ...]:
        return self.groups[0].context[: self.prefix]


@dataclass(frozen=True)
class Packed:
    """One group as one model row: its context past the shared prefix, then its options as a
    token trie. Each option adds only the scored tokens it does not share with an earlier
    option of the row (a *run*); the tokens it shares are read from the earlier runs.

    ``runs``: ``(start, length, parent)`` per run, the context first: a run's first token
    continues the sequence after row index ``parent`` (-1: after the shared prefix), each
    later token the one before it; a token sees the prefix, its run's parent chain and its run
    up to itself (a tree mask). Tokens in no run are gaps before an aligned run (masked like
    padding). ``position``: each token's position past the prefix. ``options``: per distinct
    scored input, the row indices of its scored positions and its requests.
    """

    tokens: tuple[int, ...]
    position: tuple[int, ...]
    runs: tuple[tuple[int, int, int], ...]
    options: tuple[tuple[tuple[int, ...], list[Request]], ...]

    @property
    def scored(self) -> int:
        """Positions of the row the LM head runs on (shared ones once)."""
        return sum(n for _, n, _ in self.runs[1:])

    @property
    def gaps(self) -> int:
        return len(self.tokens) - sum(n for _, n, _ in self.runs)

    @property
    def chain(self) -> bool:
        """One causal sequence (context, then one option): needs no tree mask."""
        return len(self.runs) <= 2 and self.gaps == 0


def _sharing(scored: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    """Per option (in this order): the earlier option it shares the longest prefix with and
    that length, ``(-1, 0)`` if none. The options' new tokens are the trie's nodes, whatever
    the order."""
    out = []
    for j, s in enumerate(scored):
        best = max(((common_prefix(s, scored[a]), a) for a in range(j)), default=(0, -1))
        out.append((best[1], best[0]) if best[0] else (-1, 0))
    return out


def _layout(scored: list[tuple[int, ...]], align: int, align_min: int):
    """How the options (in this order) share and where their runs go: ``_sharing``; per
    option its path, an (option, offset) pair per scored token naming the run that holds it;
    and the gap before its run. A run is aligned (its first token a multiple of ``align`` past
    where stock has that token, counted from the context's end) when an option of
    ``align_min`` tokens or more reads it."""
    share = _sharing(scored)
    paths: list[list[tuple[int, int]]] = []
    for j, s in enumerate(scored):
        a, c = share[j]
        paths.append((paths[a][:c] if c else []) + [(j, t) for t in range(c, len(s))])
    need = [False] * len(scored)
    for j, s in enumerate(scored):
        if align and len(s) >= align_min:
            for run, _ in paths[j]:
                need[run] = True
    gaps, end = [], 0
    for j, s in enumerate(scored):
        c = share[j][1]
        gaps.append((c - end) % align if need[j] and c < len(s) else 0)
        end += gaps[-1] + len(s) - c
    return share, paths, gaps


def pack(group: Group, prefix: int, align: int = ALIGN, align_min: int = ALIGN_MIN) -> Packed:
    """``group`` as one row after its first ``prefix`` context tokens (see ``Packed``); the
    options in the order (of up to 6) that needs the fewest gap tokens, else as given."""
    tail = group.context[prefix:]
    items = list(group.rows.items())
    if align and 1 < len(items) <= 6 and any(len(s) >= align_min for s, _ in items):
        cost = lambda o: sum(_layout([s for s, _ in o], align, align_min)[2])  # noqa: E731
        items = list(min(itertools.permutations(items), key=cost))
    scored = [s for s, _ in items]
    share, paths, gaps = _layout(scored, align, align_min)
    tokens, position = list(tail), list(range(len(tail)))
    runs = [(0, len(tail), -1)]
    start: list[int] = []  # row index of each option's run

    def row(o: int, t: int) -> int:
        """Row index of option ``o``'s scored token ``t`` (in ``o``'s run)."""
        return start[o] + t - share[o][1]

    for j, s in enumerate(scored):
        (a, c), gap = share[j], gaps[j]
        tokens += [0] * gap
        position += [len(tail)] * gap
        start.append(len(tokens))
        if c < len(s):
            parent = row(*paths[a][c - 1]) if c else len(tail) - 1
            runs.append((len(tokens), len(s) - c, parent))
            tokens += s[c:]
            position += range(len(tail) + c, len(tail) + len(s))
    options = tuple(
        (tuple(row(o, t) for o, t in paths[j]), reqs) for j, (_, reqs) in enumerate(items)
    )
    return Packed(tuple(tokens), tuple(position), tuple(runs), options)


def plan_chunks(groups: list[Group], join_tokens: int) -> list[Chunk]:
    """Consecutive (sorted) groups joined into chunks, greedily.

    A chunk of k groups with shared prefix P runs P + sum(context - P) context positions, so
    joining group g (shared prefix S <= P with the chunk) costs (k - 1) (P - S) positions
    recomputed by the others, less the S that g itself no longer runs. g joins when that is at
    most ``join_tokens`` (about what one more model call costs), unless g shares more than
    that beyond S with the next group (the first question of a new few-shot prompt starts a
    chunk of its own). Groups that share nothing end up in one chunk of prefix 0: one batch.
    """
    chunks: list[Chunk] = []
    for i, g in enumerate(groups):
        if chunks:
            c = chunks[-1]
            shared = min(c.prefix, common_prefix(c.groups[-1].context, g.context))
            ahead = common_prefix(g.context, groups[i + 1].context) if i + 1 < len(groups) else 0
            cost = (len(c.groups) - 1) * (c.prefix - shared) - shared
            if cost <= join_tokens and ahead <= shared + join_tokens:
                chunks[-1] = Chunk(shared, [*c.groups, g])
                continue
        chunks.append(Chunk(len(g.context), [g]))
    return chunks


def plan_batches(
    rows: list[Packed], max_tokens: int, call_tokens: int, max_rows: int = 256
) -> list[list[Packed]]:
    """``rows`` (any order: sorted here, longest first) cut into decoder calls that run the
    fewest positions.

    A call of k rows runs k x (its longest row) positions (right padding) plus ``call_tokens``
    for the call itself (what a call costs whatever its size: per-layer overhead). Filling
    every call to ``max_tokens`` pads short rows up to the longest (8% more positions on the
    benchmark suite); one call per row pays ``call_tokens`` each time. The best cut of the
    sorted rows into consecutive runs, by dynamic programming, within ``max_tokens`` padded
    tokens and ``max_rows`` rows per call (a row alone always fits). The LM head is not part
    of a call: it runs on the scored positions of many calls at once.
    """
    rows = sorted(rows, key=lambda r: len(r.tokens), reverse=True)
    best = [0.0] + [float("inf")] * len(rows)  # best[i]: cost of running rows[:i]
    start = [0] * (len(rows) + 1)  # where the last call of that plan starts
    for i in range(1, len(rows) + 1):
        for j in range(i - 1, max(i - max_rows, 0) - 1, -1):  # last call: rows[j:i]
            k = i - j
            if k > 1 and k * len(rows[j].tokens) > max_tokens:
                break
            cost = best[j] + k * len(rows[j].tokens) + call_tokens
            if cost < best[i]:
                best[i], start[i] = cost, j
    calls, i = [], len(rows)
    while i:
        calls.append(rows[start[i] : i])
        i = start[i]
    return calls[::-1]
