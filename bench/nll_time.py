"""Test NLL against CPU training time for issue 11's models: one PNG and one Markdown table.

Each run folder gives a curve and a point. The curve is its held-out monitor, the IWAE bound with
K = eval.monitor_samples on the first eval.monitor_examples test images (-IWAE_K is an upper bound on
the NLL, and it tightens as K grows). It is drawn against the cumulative training time: the sum of the
epochs' seconds, without the monitor's own passes. The point is the final NLL by importance sampling
from `vaekit evaluate` (eval.json: K = 5000, all 10k test images). Runs given the same budget are
compared at equal wall time.

    python bench/nll_time.py RUN [RUN ...] --out docs/images/nll_time.png   # table on stdout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaekit.compare import read_metrics


def curve(rows: list[dict]) -> tuple[list[float], list[float], str]:
    """(minutes, -IWAE_K, key) of the monitored rows; minutes = cumulative epoch seconds / 60."""
    key = next((k for r in rows for k in r if k.startswith(("test/iwae", "valid/iwae"))), None)
    minutes, nll, total = [], [], 0.0
    for row in rows:
        total += row.get("epoch_s", 0.0)
        if key and isinstance(row.get(key), (int, float)):
            minutes.append(total / 60)
            nll.append(-row[key])
    return minutes, nll, key or "none"


def summary(run: Path) -> dict:
    rows = read_metrics(run)
    doc = {}
    for name in ("eval.json", "published.json"):  # a zoo entry keeps its evaluation in published.json
        if not doc and (run / name).is_file():
            doc = json.loads((run / name).read_text())
    doc = {k: (v["value"] if isinstance(v, dict) else v) for k, v in doc.get("results", doc).items()
           if k in ("nll", "elbo")}
    config = json.loads((run / "config.json").read_text())
    family = config["model"]["name"]
    preset = (config.get(family) or {}).get("preset")
    return {"run": run.name, "model": f"{family} {preset or ''}".strip(), "objective": config["train"]["objective"],
            "k": config["train"]["num_samples"], "epochs": rows[-1]["epoch"] if rows else 0,
            "minutes": sum(r.get("epoch_s", 0.0) for r in rows) / 60, "nll": doc.get("nll"),
            "elbo": doc.get("elbo"), "curve": curve(rows),
            "hardware": next((r["hardware"] for r in reversed(rows) if "hardware" in r), "hardware not logged")}


def plot(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for r in runs:
        minutes, nll, key = r["curve"]
        label = f"{r['run']}, {r['hardware']} (-{key.split('/')[1]}, monitored test images)"
        line = axes.plot(minutes, nll, label=label)[0]
        if r["nll"] is not None:
            axes.plot([r["minutes"]], [r["nll"]], "o", color=line.get_color())
    axes.set(xlabel="training time, minutes (sum of epoch times, monitor passes left out)", ylabel="test NLL, nats",
             title="dynamically binarised MNIST; dots: IS, K = 5000, 10k test images")
    axes.set_ylim(top=min(100.0, max(n for r in runs for n in r["curve"][1][-1:] + [0.0]) + 8))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    runs = [summary(run) for run in args.runs]
    plot(runs, args.out)
    print("| run | model | objective | epochs | training minutes | test NLL (IS, K = 5000) | test -ELBO |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        nll = "not evaluated" if r["nll"] is None else f"{r['nll']:.2f}"
        elbo = "" if r["elbo"] is None else f"{-r['elbo']:.2f}"
        objective = r["objective"] if r["objective"] == "elbo" else f"{r['objective']} k = {r['k']}"
        print(f"| {r['run']} | {r['model']} | {objective} | {r['epochs']} | {r['minutes']:.1f} | {nll} | {elbo} |")


if __name__ == "__main__":
    main()
