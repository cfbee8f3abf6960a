"""`vaekit compare RUN [RUN ...]`: runs side by side, from their typed results alone.

This module reads the runs and builds the table (rows, columns, the text of every cell) and runs the
command; `vaekit.report` draws it (HTML, Markdown, the training curves) and drives headless Chromium.

Every number comes from a run's own files: the `Result` records under "results" in eval.json (`vaekit
evaluate`) and quality.json (`vaekit quality`). Nothing here knows a family by name: a column is a
result name that some run reports, a cell is that run's record ("value ± stderr", its unit and its
side: exact, an estimate or which bound), and a run without the record shows "not computed" — never a
number from elsewhere. `--evaluate` computes the missing files first.

Column order (stable for the same runs in the same order):
1. the run's description: run (folder name), family, architecture, parameters, data set, binarisation,
   test set, epochs, training time, hardware (each epoch logs its device). The architecture is the run's
   family section of its config (the section named after model.name, as vaekit reads the run: its
   checkpoint's record, which config.json must agree with), every field set, in the section's order, as
   `key=value` (strings bare, other values as JSON: `hidden=[200, 200] latent=50 activation=tanh`);
   fields set to null are left out;
2. eval.json results in nats or bits/dim: log p(x), its bounds, the ELBO's terms (and any other entropy);
3. sample quality: quality.json results;
4. the other eval.json results (shares, accuracies, ...).
Within 2-4, a result comes in order of first appearance: the runs in the order given, each run's results
in the order its family reports them.

Outputs, in a new folder: report.html (one self-contained file: CSS inline, pictures embedded as data:
URIs, so it can be mailed), report.md (the same table; pictures copied into pictures/<run>/ beside it,
the training curves of every metric two or more runs logged drawn on common axes into curves/),
compare.json (every row and record behind the table), and with --screenshot report.png, drawn by headless
Chromium (`vaekit.report.screenshot`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .results import SIDES, Result, from_json

SOURCES = {"eval": "eval.json", "quality": "quality.json"}  # where a run's typed results live
LIKELIHOOD_UNITS = ("nats", "bits/dim")
GROUPS = {"likelihood": "in nats or bits: log-likelihoods, bounds, their terms (eval.json)",
          "quality": "sample quality (quality.json)", "other": "other results (eval.json)"}
NOT_COMPUTED = "not computed"
NOT_DRAWN = "not drawn"
# the pictures shown, in this order, where a run has them (file names in RUN/pictures/, not families)
PICTURES = ("samples", "reconstructions", "interpolations", "nearest_training_images", "training_curves")
SIDE_MARKS = {"exact": "exact", "estimate": "est", "lower bound": "LB", "upper bound": "UB",
              "stochastic lower bound": "sLB", "stochastic upper bound": "sUB"}
SIDE_TEXT = {
    "exact": "exact: the quantity itself (up to floating point)",
    "estimate": "estimate: unbiased or consistent, on neither side",
    "lower bound": "lower bound: always ≤ the quantity named",
    "upper bound": "upper bound: always ≥ the quantity named",
    "stochastic lower bound": "stochastic lower bound: ≤ the quantity in expectation (Jensen), "
                              "e.g. log p(x) by importance sampling",
    "stochastic upper bound": "stochastic upper bound: ≥ the quantity in expectation, "
                              "e.g. the NLL by importance sampling",
}
DESCRIPTION = ("run", "family", "architecture", "parameters", "data", "binarisation", "test set", "epochs",
               "training time", "hardware")
assert set(SIDE_MARKS) == set(SIDES) == set(SIDE_TEXT)


class CompareError(ValueError):
    """Runs that cannot go in one table as asked (different data sets, an output folder in the way)."""


@dataclass
class Run:
    """One row of the table: a run's description, its typed results and its pictures."""

    label: str  # unique among the rows: the folder name, -2, -3 ... on a clash
    path: Path | None  # None for the floor row (real images, no model)
    family: str
    data: str
    description: dict[str, str]  # DESCRIPTION name -> text
    results: dict[tuple[str, str], Result]  # (source, name) -> record
    notes: list[str] = field(default_factory=list)
    pictures: dict[str, Path] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # the family's config section
    metrics: list[dict] = field(default_factory=list)  # the rows of metrics.jsonl, one per epoch


@dataclass(frozen=True)
class Column:
    source: str  # "eval" | "quality"
    name: str
    group: str  # a key of GROUPS
    label: str  # the header: the name, with its file where two sources share a name
    unit: str | None  # in the header when every run agrees, else in each cell


@dataclass
class Report:
    out: Path
    files: dict[str, Path]
    markdown_table: str
    runs: list[Run]
    columns: list[Column]


# ---- reading runs -------------------------------------------------------------------------------

def read_json(path: Path) -> dict | None:
    """A JSON file of a run, or None if absent; unreadable JSON is an error naming the file."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not readable JSON ({e}): re-create it (vaekit evaluate / quality)") \
            from None


def typed_results(doc: dict | None, path: Path) -> dict[str, Result]:
    """The Result records of an eval.json / quality.json (empty when absent or written before typed
    results existed); malformed records are an error naming the file."""
    if not doc or "results" not in doc:
        return {}
    try:
        return from_json(doc["results"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r}: its \"results\" are not Result records ({e})") from None


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of metrics.jsonl (one per epoch); none when the run logged none."""
    from .train import read_rows
    path = run_dir / "metrics.jsonl"
    return read_rows(path) if path.is_file() else []


def training_seconds(rows: list[dict]) -> float | None:
    """Training time: the sum of the logged epoch times (None when no row logged one)."""
    times = [row["epoch_s"] for row in rows if isinstance(row.get("epoch_s"), (int, float))]
    return float(sum(times)) if times else None


def hardware(rows: list[dict]) -> str:
    """The hardware the epochs were trained on, in order of first use ("not logged" before it was logged)."""
    names = dict.fromkeys(row["hardware"] for row in rows if isinstance(row.get("hardware"), str))
    return ", ".join(names) or "not logged"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "not logged"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.2f} h"


def count_parameters(run_dir: Path) -> int | None:
    """Every parameter of the run's saved model (every player's); None without a checkpoint."""
    from .runs import load_run
    if not (run_dir / "checkpoint.safetensors").is_file():
        return None
    _, model = load_run(run_dir, "cpu")
    return sum(p.numel() for p in model.parameters())


def epochs_text(cfg, meta: dict | None, rows: list[dict]) -> str:
    """Epochs of the compared checkpoint, 'E of N' when training stopped before its planned N."""
    done = meta["epoch"] if meta else (rows[-1].get("epoch", 0) if rows else 0)
    planned = cfg.train.epochs
    return f"{done}" if done >= planned else f"{done} of {planned}"


def data_identity(cfg) -> str:
    """The data set a run was scored on: its name (and file, for data read from a file)."""
    return cfg.data.name + (f" ({cfg.data.path})" if cfg.data.path else "")


def staleness(doc: dict | None, current: dict | None, file: str) -> list[str]:
    """A note when a results file was computed from another checkpoint than the run's last one."""
    recorded = (doc or {}).get("checkpoint")
    if not doc or not recorded or not current or recorded == current:
        return []
    return [f"{file} is of epoch {recorded.get('epoch')} (step {recorded.get('step')}), the checkpoint of epoch "
            f"{current['epoch']} (step {current['step']}): recompute it (vaekit compare --evaluate)"]


def run_notes(run_dir: Path, docs: dict[str, dict | None]) -> list[str]:
    """What a reader must know beside the numbers: stale or untyped results files, the family's note."""
    from . import checkpoint
    current = checkpoint.describe(run_dir)
    notes = [n for source, doc in docs.items() for n in staleness(doc, current, SOURCES[source])]
    notes += [f"{SOURCES[s]} predates typed results: recompute it (vaekit compare --evaluate)"
              for s, doc in docs.items() if doc is not None and "results" not in doc]
    if docs["eval"] and isinstance(docs["eval"].get("note"), str):
        notes.append(docs["eval"]["note"])
    return notes


def setting_text(value) -> str:
    """A config value as the architecture column shows it: a plain string bare, anything else as JSON."""
    plain = isinstance(value, str) and value and not re.search(r"[\s=\"]", value)
    return value if plain else json.dumps(value)


def architecture_text(settings: dict) -> str:
    """The architecture column: every field of the family's config section that is set (not null), in the
    section's order, as `key=value` (e.g. "hidden=[200, 200] latent=50 activation=tanh")."""
    return " ".join(f"{key}={setting_text(value)}" for key, value in settings.items() if value is not None) or "—"


def describe(run_dir: Path, label: str, cfg, settings: dict, eval_doc: dict | None, rows: list[dict]) -> dict:
    """The run's description: a text per DESCRIPTION name."""
    from . import checkpoint
    parameters = count_parameters(run_dir)
    return {"run": label, "family": cfg.model.name, "architecture": architecture_text(settings),
            "parameters": NOT_COMPUTED if parameters is None else f"{parameters:,}", "data": data_identity(cfg),
            "binarisation": cfg.data.binarization,
            "test set": (eval_doc or {}).get("test_binarization", NOT_COMPUTED),
            "epochs": epochs_text(cfg, checkpoint.metadata(run_dir), rows),
            "training time": format_duration(training_seconds(rows)), "hardware": hardware(rows)}


def read_run(run_dir: Path, label: str) -> Run:
    """A run folder as a row of the table."""
    from . import config as configlib
    from .runs import run_config
    cfg = run_config(run_dir)
    docs = {source: read_json(run_dir / file) for source, file in SOURCES.items()}
    results = {(source, name): r for source, doc in docs.items()
               for name, r in typed_results(doc, run_dir / SOURCES[source]).items()}
    rows, settings = read_metrics(run_dir), configlib.to_dict(cfg).get(cfg.model.name, {})
    pictures = {name: run_dir / "pictures" / f"{name}.png" for name in PICTURES}
    description = describe(run_dir, label, cfg, settings, docs["eval"], rows)
    return Run(label, run_dir, cfg.model.name, data_identity(cfg), description, results, run_notes(run_dir, docs),
               {k: p for k, p in pictures.items() if p.is_file()}, settings, rows)


def unique_names(bases: list[str]) -> list[str]:
    """The names, each repeat made unique with -2, -3, ... (two runs may share a folder name)."""
    names: list[str] = []
    for base in bases:
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.append(name)
    return names


def unique_labels(paths: list[Path]) -> list[str]:
    """Folder names, made unique with -2, -3, ... (two runs may share a name in different parents)."""
    return unique_names([path.resolve().name or "run" for path in paths])


def check_run_folders(runs: list[str | os.PathLike]) -> list[Path]:
    """The RUN arguments as folders; each must exist and be named once."""
    if not runs:
        raise ValueError("compare: expected one or more RUN folders, got none")
    paths = [Path(r) for r in runs]
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"compare: {str(path)!r} is not a folder (expected a run folder written by "
                                    "vaekit train)")
    seen = [p.resolve() for p in paths]
    twice = sorted({str(p) for p in paths if seen.count(p.resolve()) > 1})
    if twice:
        raise ValueError(f"compare: {twice} named more than once")
    return paths


def check_same_data(runs: list[Run], allow_mixed: bool) -> None:
    """One data set per table unless asked: numbers on different test sets are not comparable."""
    by_data: dict[str, list[str]] = {}
    for run in runs:
        by_data.setdefault(run.data, []).append(run.label)
    if len(by_data) > 1 and not allow_mixed:
        listed = "; ".join(f"{', '.join(labels)} on {data!r}" for data, labels in by_data.items())
        raise CompareError(f"compare: the runs are on different data sets ({listed}): a table mixing data sets "
                           "misleads, their numbers being of different test sets; compare the runs of one data set, "
                           "or pass --allow-mixed-data to put them in one table anyway")


def caveats(runs: list[Run]) -> list[str]:
    """Differences between the rows that change what their numbers mean (beyond the family)."""
    models = [r for r in runs if r.path is not None]
    variants = sorted({r.description["binarisation"] for r in models})
    if len(variants) > 1:
        return [f"the runs differ in data.binarization ({', '.join(variants)}): their likelihoods are of "
                "different test sets (see the column 'test set')"]
    return []


# ---- columns and cells --------------------------------------------------------------------------

def group_of(source: str, r: Result) -> str:
    if source == "quality":
        return "quality"
    return "likelihood" if r.unit in LIKELIHOOD_UNITS else "other"


def columns_of(runs: list[Run]) -> list[Column]:
    """Every (source, result name) any run has, grouped (see the module docstring for the order)."""
    first: dict[tuple[str, str], str] = {}
    for run in runs:
        for key, r in run.results.items():
            first.setdefault(key, group_of(key[0], r))
    names = [name for _, name in first]
    columns = []
    for group in GROUPS:
        for (source, name), g in first.items():
            if g == group:
                label = name if names.count(name) == 1 else f"{name} ({SOURCES[source]})"
                units = {run.results[(source, name)].unit for run in runs if (source, name) in run.results}
                columns.append(Column(source, name, group, label, units.pop() if len(units) == 1 else None))
    return columns


def decimals(value: float, stderr: float | None) -> int:
    """Digits after the point: to the second significant digit of the error, else four significant
    digits of the value; never more than six significant digits of the value (an error of 1e-18 is
    round-off, not a reason for 18 digits), nor more than 8."""
    by_value = 0 if not math.isfinite(value) or value == 0 else 3 - math.floor(math.log10(abs(value)))
    if stderr is not None and math.isfinite(stderr) and stderr > 0:
        by_error = 1 - math.floor(math.log10(stderr))
        return min(8, max(0, min(by_error, by_value + 2) if value else by_error))
    return min(8, max(0, by_value))


def number_text(r: Result) -> str:
    """'value ± stderr' rounded as `decimals` says (no error shown when none was computed)."""
    d = decimals(r.value, r.stderr)
    text = f"{r.value:.{d}f}" if math.isfinite(r.value) else str(r.value)
    if r.stderr is not None and math.isfinite(r.stderr):
        text += f" ± {r.stderr:.{d}f}"
    return text


def cell_text(r: Result, column: Column) -> str:
    """The cell as plain text: 'value ± stderr [unit] (side)'; the unit only where the header lacks it."""
    unit = "" if column.unit is not None else f" {r.unit}"
    return f"{number_text(r)}{unit} ({SIDE_MARKS[r.side]})"


def header_text(column: Column) -> str:
    return column.label + (f" [{column.unit}]" if column.unit else "")


def detail_text(r: Result) -> str:
    """How a number was made: estimator, samples, examples (a tooltip in the page)."""
    counts = [f"{r.num_samples} samples" if r.num_samples else "",
              f"{r.num_examples} examples" if r.num_examples else ""]
    return "; ".join([r.side, r.estimator, *[c for c in counts if c]])


# ---- the output folder --------------------------------------------------------------------------

def report_dir(out: str | os.PathLike | None, force: bool, runs: list[Run]) -> Path:
    """The folder of a new report (runs.fresh_folder): `out`, or a fresh runs/compare-<time>."""
    from .runs import fresh_folder
    if out is not None:
        inside = [run.label for run in runs
                  if run.path is not None and run.path.resolve().is_relative_to(Path(out).resolve())]
        if inside:  # --force would move the runs themselves aside
            raise CompareError(f"--out {str(out)!r} is, or holds, a run compared ({', '.join(inside)}): choose "
                               "another folder")
    return fresh_folder(out, Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}", force, "report",
                        "(an earlier report?): choose another folder", CompareError)


# ---- computing what is missing, the floor -------------------------------------------------------

def needs(run_dir: Path, source: str) -> bool:
    """Whether --evaluate must (re)compute a results file: absent, untyped, or of an older checkpoint."""
    from . import checkpoint
    doc = read_json(run_dir / SOURCES[source])
    if doc is None or "results" not in doc:
        return True
    return bool(staleness(doc, checkpoint.describe(run_dir), SOURCES[source]))


def evaluate_missing(paths: list[Path], num_samples: int | None, quality_samples: int | None, device: str,
                     progress: bool) -> None:
    """`--evaluate`: eval.json (vaekit evaluate) and quality.json (vaekit quality) where missing or stale."""
    from . import yardstick
    from .evaluate import evaluate_run
    for path in paths:
        if needs(path, "eval"):
            print(f"evaluating {path} (eval.json)", flush=True)
            evaluate_run(path, num_samples, device, progress=progress)
        if needs(path, "quality"):
            print(f"scoring the samples of {path} (quality.json)", flush=True)
            yardstick.run_quality(path, quality_samples, device, progress=progress)


def floor_rows(runs: list[Run], num_samples: int | None, device: str, progress: bool) -> list[Run]:
    """`--floor`: per data set, real training images scored as samples against the test images (the
    floor any model can reach), as a row of sample-quality results."""
    firsts: dict[str, Run] = {}  # data set -> its first run
    for run in runs:
        if run.path is not None:
            firsts.setdefault(run.data, run)
    return [floor_row(run, num_samples, device, progress) for run in firsts.values()]


def floor_row(run: Run, num_samples: int | None, device: str, progress: bool) -> Run:
    """The floor row of the data set of `run`."""
    from . import yardstick
    from .runs import load_sets, resolve_device, run_config
    sets = load_sets(run_config(run.path).data)
    dev = resolve_device(device, "--device")
    results = yardstick.floor(sets["train"].to(dev), sets["test"].to(dev), num_samples, progress=progress)
    label = f"floor: {run.data}"
    described = {k: "—" for k in DESCRIPTION} | {"run": label, "family": "training images", "data": run.data,
                                                  "binarisation": "none"}
    return Run(label, None, "training images", run.data, described, {("quality", n): r for n, r in results.items()},
               ["real training images scored as samples against the test images: the floor"])


# ---- the command --------------------------------------------------------------------------------

def positive(value: int | None, name: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def compare(runs: list[str | os.PathLike], out: str | os.PathLike | None = None, force: bool = False,
            allow_mixed_data: bool = False, evaluate: bool = False, floor: bool = False,
            num_samples: int | None = None, quality_samples: int | None = None, device: str = "auto",
            screenshot_png: bool = False, progress: bool = True) -> Report:
    """Compare run folders: writes report.html, report.md, compare.json (and report.png with
    screenshot_png) into a new folder `out`; returns a Report with the Markdown table."""
    from .report import chromium_binary, screenshot, write_report
    positive(num_samples, "num_samples")
    positive(quality_samples, "quality_samples")
    if screenshot_png:
        chromium_binary()  # before any work: a missing browser is known now
    paths = check_run_folders(runs)
    rows = [read_run(p, label) for p, label in zip(paths, unique_labels(paths))]
    check_same_data(rows, allow_mixed_data)  # before any computing: a refused table costs nothing
    folder = report_dir(out, force, rows)
    if evaluate:
        evaluate_missing(paths, num_samples, quality_samples, device, progress)
        rows = [read_run(p, r.label) for p, r in zip(paths, rows)]
    if floor:
        rows += floor_rows(rows, quality_samples, device, progress)
    files, table, columns = write_report(rows, folder, caveats(rows))
    if screenshot_png:
        files["png"] = screenshot(files["html"], folder / "report.png")
    return Report(folder, files, table, rows, columns)

