"""What FinerCut removed in the offline_finercut sweep: the share of attention among removed
sublayers, and where in depth (shallow half 0..L/2-1 vs deep half L/2..L-1).

    .venv/bin/python experiments/finercut/attention_share.py outputs/offline_finercut/sweep
"""

import json
import sys
from pathlib import Path

print(
    "| fraction | sublayers removed | attention | MLP | attention share | attention in deep half |"
)
print("|---|---|---|---|---|---|")
rows = []
for path in Path(sys.argv[1]).glob("*/results.json"):
    r = json.loads(path.read_text())
    plan = r["plan"]
    if plan["method"] != "finercut":
        continue
    num_blocks = plan["num_candidates"] // 2
    attn = sorted(plan["removed_attention"] + plan["removed_blocks"])
    mlp = sorted(plan["removed_mlp"] + plan["removed_blocks"])
    deep = sum(i >= num_blocks // 2 for i in attn)
    rows.append((r["fraction"], len(attn) + len(mlp), len(attn), len(mlp), deep, plan))
for fraction, n, a, m, deep, _ in sorted(rows, key=lambda x: x[0]):
    print(f"| {fraction} | {n} | {a} | {m} | {a / n:.0%} | {deep} of {a} |")
order = max(rows, key=lambda x: x[0])[5]["scores"]["order"]
print("\ngreedy order:", " ".join(f"{k[0]}{b}" for k, b, _ in order))
