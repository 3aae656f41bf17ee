"""Render results.json of the baseline job as the Markdown table in README.md."""

import json
import sys
from pathlib import Path

r = json.loads(Path(sys.argv[1]).read_text())
m, t = r["metrics"], r["timings"]
tasks = [
    ("arc_easy", "acc_norm"),
    ("arc_challenge", "acc_norm"),
    ("piqa", "acc_norm"),
    ("hellaswag", "acc_norm"),
    ("winogrande", "acc"),
    ("boolq", "acc"),
    ("openbookqa", "acc_norm"),
    ("mmlu", "acc"),
]
print("| task | shots | items | acc | acc_norm | chance | eval time |")
print("|---|---|---|---|---|---|---|")
for task, _ in tasks:
    acc = f"{m[f'{task}/acc']:.4f} ± {m.get(f'{task}/acc_stderr', float('nan')):.4f}"
    norm = f"{m[f'{task}/acc_norm']:.4f}" if f"{task}/acc_norm" in m else "-"
    shots = 5 if task == "mmlu" else 0
    print(
        f"| {task} | {shots} | {int(m[f'{task}/n']):,} | {acc} | {norm} | "
        f"{m[f'{task}/chance']:.3f} | {t[f'eval_{task}_s']:.0f} s |"
    )
for src, name in (("wiki", "Wikipedia evaluation split"), ("c4", "C4 evaluation split")):
    print(
        f"| {name} | - | {int(m[f'{src}/tokens']):,} tokens | loss {m[f'{src}/loss']:.4f} | "
        f"ppl {m[f'{src}/ppl']:.2f} (word ppl {m[f'{src}/word_ppl']:.2f}) | - | "
        f"{t[f'eval_{src}_s']:.0f} s |"
    )
