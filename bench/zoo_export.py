"""Add a run to the model zoo (vaekit/zoo/<name>/) with the figures it was published with: the typed
results of its eval.json and quality.json, the command that made it and where docs/benchmarks.md reports it.

    python bench/zoo_export.py RUN NAME --summary "..." --command "vaekit run ..." --docs "docs/benchmarks.md, section 1"
"""

import argparse
from pathlib import Path

from vaekit import zoo
from vaekit.compare import read_json, typed_results
from vaekit.results import as_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("name")
    p.add_argument("--summary", required=True, help="one line: model, data variant, training budget")
    p.add_argument("--command", required=True, help="the command that trained and evaluated it")
    p.add_argument("--docs", required=True, help="where docs/benchmarks.md reports its figures")
    args = p.parse_args()
    results, sources = {}, []
    for file in ("eval.json", "quality.json"):
        path = Path(args.run) / file
        record = read_json(path)
        if record is not None:
            typed = as_json(typed_results(record, path))
            if not typed:
                raise SystemExit(f"{path} holds no typed results: recompute it (vaekit evaluate / quality)")
            results.update({k: v for k, v in typed.items() if k not in results})
            sources.append({"file": file, "checkpoint": record.get("checkpoint"), "data": record.get("data")})
    info = {"summary": args.summary, "command": args.command, "docs": args.docs, "results": results,
            "sources": sources}
    print(f"wrote {zoo.export(args.run, args.name, info)}")


if __name__ == "__main__":
    main()
