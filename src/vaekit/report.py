"""The report of `vaekit compare`: the table and pictures as HTML and Markdown, the training curves of
every run on common axes, and headless Chromium to check and photograph the page.

`vaekit.compare` reads the runs and builds the table (rows, columns, the text of every cell); this
module only draws it. The HTML page is one self-contained file (CSS inline, every picture a data: URI);
the Markdown links the same pictures as files beside it (pictures/<run>/, curves/).

Training curves on common axes: for every metric that two or more runs logged in metrics.jsonl (a
numeric train/, valid/ or test/ key, the keys `plots.plot_training_curves` draws, the same key in each
run), one figure with a line per run against the epoch, in the runs' colours (a run keeps its colour in
every figure). Metrics only one run logged stay in its own training_curves.png, among the pictures.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .compare import (DESCRIPTION, GROUPS, NOT_COMPUTED, NOT_DRAWN, PICTURES, SIDE_MARKS, SIDE_TEXT, Column, Run,
                      cell_text, columns_of, detail_text, header_text, number_text, unique_names)
from .results import SIDES


class BrowserError(ValueError):
    """Headless Chromium failed (a ValueError, so the CLI reports it in one line, exit status 2)."""


# ---- Markdown -----------------------------------------------------------------------------------

def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_grid(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(md_escape(c) for c in cells) + " |" for cells in rows])


def result_text(run: Run, column: Column) -> str:
    result = run.results.get((column.source, column.name))
    return NOT_COMPUTED if result is None else cell_text(result, column)


def markdown_table(runs: list[Run], columns: list[Column]) -> str:
    """The tables: the runs' descriptions, then one per column group (the run, then the group's columns),
    so that each fits a page; every run has a row in each, "not computed" where it has no result."""
    tables = [markdown_grid(list(DESCRIPTION), [[run.description[d] for d in DESCRIPTION] for run in runs])]
    for group, title in GROUPS.items():
        chosen = [c for c in columns if c.group == group]
        if chosen:
            cells = [[run.label, *(result_text(run, c) for c in chosen)] for run in runs]
            tables.append(f"**{title[0].upper()}{title[1:]}**\n\n" + markdown_grid(["run", *(header_text(c) for c in chosen)], cells))
    return "\n\n".join(tables)


ARCHITECTURE_TEXT = ("Architecture: every field set in the run's family section of its config (the section named "
                     "after its family), as key=value.")


def columns_text(columns: list[Column]) -> str:
    """Which columns each group holds."""
    groups = "; ".join(f"{GROUPS[g]}: {', '.join(c.label for c in columns if c.group == g)}"
                       for g in GROUPS if any(c.group == g for c in columns))
    return f"Columns: {groups}."


def legend_lines(columns: list[Column]) -> list[str]:
    """What the markers and the column groups mean."""
    marks = "; ".join(f"**{m}** {SIDE_TEXT[s]}" for s, m in SIDE_MARKS.items())
    return [f"Cells: value ± standard error, then how the value relates to the quantity named: {marks}.",
            f"\"{NOT_COMPUTED}\": the run's files hold no such result (vaekit compare --evaluate computes "
            "eval.json and quality.json where missing). Units in [brackets] in the header.",
            columns_text(columns), ARCHITECTURE_TEXT]


def markdown_pictures(runs: list[Run], picture_paths: dict[tuple[str, str], str]) -> list[str]:
    """A table per picture kind: the runs side by side, each image linked as a relative file."""
    lines = []
    for kind in PICTURES:
        if not any(kind in run.pictures for run in runs):
            continue
        shown = [run for run in runs if run.path is not None]
        lines += ["", f"### {kind.replace('_', ' ')}", "",
                  "| " + " | ".join(md_escape(r.label) for r in shown) + " |", "|" + "---|" * len(shown),
                  "| " + " | ".join(f"![{kind} of {md_escape(r.label)}]({picture_paths[(r.label, kind)]})"
                                    if (r.label, kind) in picture_paths else NOT_DRAWN for r in shown) + " |"]
    return lines


def notes_lines(runs: list[Run], notes: list[str]) -> list[str]:
    lines = [f"- {note}" for note in notes]
    lines += [f"- {run.label}: {note}" for run in runs for note in run.notes]
    return (["", "## Notes", "", *lines]) if lines else []


def markdown_curves(curve_paths: dict[str, str]) -> list[str]:
    """The figures of the metrics two or more runs logged, linked as files beside the page."""
    if not curve_paths:
        return []
    return ["", "## Training curves on common axes", "", CURVES_TEXT, "",
            " ".join(f"![{md_escape(metric)}]({path})" for metric, path in curve_paths.items())]


def markdown_page(runs: list[Run], columns: list[Column], picture_paths: dict, notes: list[str],
                  curve_paths: dict[str, str] | None = None) -> str:
    return "\n".join([f"# {title_of(runs)}", "", markdown_table(runs, columns), "",
                      *legend_lines(columns), *notes_lines(runs, notes), "", "## Pictures",
                      *markdown_pictures(runs, picture_paths), *markdown_curves(curve_paths or {}), ""])


# ---- HTML ---------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d0d0d7; padding: 4px 8px; vertical-align: top; }
thead th { background: #f1f1f5; }
th.group { text-align: center; }
table.results th[scope="row"] { position: sticky; left: 0; background: #ffffff; }
th.group-likelihood, td.group-likelihood { background-color: #f4f8ff; }
th.group-quality, td.group-quality { background-color: #f5fbf4; }
td.result { white-space: nowrap; text-align: right; font-variant-numeric: tabular-nums; }
td.missing { color: #8a8a92; font-style: italic; text-align: center; }
abbr.side { font-size: 11px; color: #5a5a66; text-decoration: none; border-bottom: 1px dotted #8a8a92; }
table.pictures td { text-align: center; }
table.pictures img { max-width: 420px; height: auto; display: block; margin: auto; }
table.pictures img[data-picture="training_curves"] { max-width: 640px; }
td[data-description="architecture"] { min-width: 16em; max-width: 26em; font-size: 12px; }
.curves { display: flex; flex-wrap: wrap; gap: 8px; }
.curves img { width: 460px; height: auto; border: 1px solid #d0d0d7; }
.legend { font-size: 13px; max-width: 1100px; }
pre { font-size: 12px; background: #f7f7f9; padding: 8px; }
"""

# Sets attributes on <body> once the page has loaded: how many images decoded (a headless browser reads
# them back to check the page, see `check_page`) and the page's size (for a full-page `screenshot`).
ONLOAD = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", loaded + "/" + images.length);
  var width = document.documentElement.scrollWidth;  // a wide table scrolls in its box: add what is hidden
  document.querySelectorAll(".scroll").forEach(function (box) {
    width = Math.max(width, box.getBoundingClientRect().left + box.scrollWidth + 24);
  });
  document.body.setAttribute("data-page-width", Math.ceil(width));
  document.body.setAttribute("data-page-height", document.documentElement.scrollHeight);
});
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def html_cell(run: Run, column: Column) -> str:
    """A cell with its record in data- attributes (exact values, for programs) and its text (for people)."""
    key = f'data-run="{esc(run.label)}" data-source="{column.source}" data-result="{esc(column.name)}"'
    r = run.results.get((column.source, column.name))
    if r is None:
        return f'<td class="missing group-{column.group}" {key}>{NOT_COMPUTED}</td>'
    unit = "" if column.unit is not None else f" {esc(r.unit)}"
    attrs = (f'{key} data-value="{r.value!r}" data-stderr="{"" if r.stderr is None else repr(r.stderr)}" '
             f'data-side="{esc(r.side)}" data-unit="{esc(r.unit)}" title="{esc(detail_text(r))}"')
    mark = f'<abbr class="side" title="{esc(SIDE_TEXT[r.side])}">{SIDE_MARKS[r.side]}</abbr>'
    return f'<td class="result group-{column.group}" {attrs}>{esc(number_text(r))}{unit} {mark}</td>'


def html_header(columns: list[Column]) -> str:
    """Two header rows: the column groups, then the result names."""
    groups = [g for g in GROUPS if any(c.group == g for c in columns)]
    top = "".join(f'<th rowspan="2">{esc(d)}</th>' for d in DESCRIPTION)
    top += "".join(f'<th class="group group-{g}" colspan="{sum(c.group == g for c in columns)}">{esc(GROUPS[g])}</th>'
                   for g in groups)
    names = "".join(f'<th class="group-{c.group}" data-source="{c.source}" data-result="{esc(c.name)}">'
                    f'{esc(header_text(c))}</th>' for c in columns)
    return f"<thead><tr>{top}</tr><tr>{names}</tr></thead>"


def html_table(runs: list[Run], columns: list[Column]) -> str:
    rows = []
    for run in runs:
        described = f'<th scope="row">{esc(run.label)}</th>' + "".join(
            f'<td data-description="{esc(d)}">{esc(run.description[d])}</td>' for d in DESCRIPTION[1:])
        cells = "".join(html_cell(run, c) for c in columns)
        rows.append(f'<tr data-run="{esc(run.label)}">{described}{cells}</tr>')
    table = f'<table class="results">{html_header(columns)}<tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def data_uri(path: Path) -> str:
    """A PNG as a data: URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_pictures(runs: list[Run]) -> str:
    """A row per picture kind, the runs side by side; a run without it says so."""
    shown = [run for run in runs if run.path is not None]
    head = "<tr><th></th>" + "".join(f"<th>{esc(r.label)}</th>" for r in shown) + "</tr>"
    rows = []
    for kind in PICTURES:
        if not any(kind in r.pictures for r in shown):
            continue
        cells = "".join(f'<td><img src="{data_uri(r.pictures[kind])}" alt="{esc(kind)} of {esc(r.label)}" '
                        f'data-run="{esc(r.label)}" data-picture="{esc(kind)}"></td>' if kind in r.pictures
                        else f'<td class="missing">{NOT_DRAWN}</td>' for r in shown)
        rows.append(f'<tr><th scope="row">{esc(kind.replace("_", " "))}</th>{cells}</tr>')
    return f'<div class="scroll"><table class="pictures">{head}{"".join(rows)}</table></div>' if rows else ""


def html_legend(columns: list[Column], notes: list[str], runs: list[Run]) -> str:
    marks = "".join(f"<li><b>{SIDE_MARKS[s]}</b>: {esc(SIDE_TEXT[s])}</li>" for s in SIDES)
    items = [f"Cells: value ± standard error (hover a cell for its estimator and sample counts), unit in the "
             f"header, then how the value relates to the quantity named:<ul>{marks}</ul>",
             f"<i>{NOT_COMPUTED}</i>: the run's files hold no such result (<code>vaekit compare --evaluate</code> "
             "computes eval.json and quality.json where missing).",
             esc(columns_text(columns)), esc(ARCHITECTURE_TEXT)]
    items += [esc(n) for n in notes] + [f"{esc(r.label)}: {esc(n)}" for r in runs for n in r.notes]
    return '<div class="legend"><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def html_curves(curves: dict[str, Path]) -> str:
    """The figures of the metrics two or more runs logged, side by side as the page's width allows."""
    if not curves:
        return ""
    figures = "".join(f'<img src="{data_uri(path)}" alt="{esc(metric)} of every run" data-curve="{esc(metric)}">'
                      for metric, path in curves.items())
    return f'<h2>Training curves on common axes</h2>\n<p class="legend">{esc(CURVES_TEXT)}</p>\n' \
           f'<div class="curves">{figures}</div>\n'


def title_of(runs: list[Run]) -> str:
    """'vaekit compare: 3 runs on digits' (+ the floor when present)."""
    data = ", ".join(sorted({r.data for r in runs}))
    models = sum(r.path is not None for r in runs)
    floor = " (and the floor)" if models < len(runs) else ""
    return f"vaekit compare: {models} run{'s' * (models != 1)} on {data}{floor}"


def html_page(runs: list[Run], columns: list[Column], notes: list[str], curves: dict[str, Path] | None = None) -> str:
    from . import __version__
    title = title_of(runs)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n"
            f'<p>Written {time.strftime("%Y-%m-%d %H:%M")} by vaekit {__version__}; every number is a typed result '
            f"from the run's eval.json or quality.json.</p>\n{html_table(runs, columns)}\n"
            f"{html_legend(columns, notes, runs)}\n<h2>Pictures</h2>\n{html_pictures(runs)}\n"
            f"{html_curves(curves or {})}<script>{ONLOAD}</script>\n</body></html>\n")


def copy_pictures(runs: list[Run], out: Path) -> dict[tuple[str, str], str]:
    """Each shown picture copied to out/pictures/<run>/, for the Markdown's relative links."""
    linked = {}
    for run in runs:
        for kind, source in run.pictures.items():
            target = out / "pictures" / run.label / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            linked[(run.label, kind)] = quote(target.relative_to(out).as_posix())
    return linked


def table_json(runs: list[Run], columns: list[Column], notes: list[str], curve_paths: dict[str, str]) -> dict:
    """compare.json: every row's description, settings and records, the columns in order, the curves' files."""
    return {"columns": [{"source": c.source, "name": c.name, "group": c.group, "label": c.label, "unit": c.unit}
                        for c in columns],
            "rows": [{"label": r.label, "path": None if r.path is None else str(r.path), "family": r.family,
                      "data": r.data, "description": r.description, "settings": r.settings, "notes": r.notes,
                      "results": {f"{s}:{n}": res.to_dict() for (s, n), res in r.results.items()}} for r in runs],
            "notes": notes, "curves": curve_paths}


def write_report(runs: list[Run], out: Path, notes: list[str]) -> tuple[dict[str, Path], str, list[Column]]:
    """report.html, report.md (its pictures and curves beside it) and compare.json in `out`."""
    columns, curves = columns_of(runs), draw_curves(runs, out / "curves")
    curve_paths = {metric: quote(path.relative_to(out).as_posix()) for metric, path in curves.items()}
    files = {"html": out / "report.html", "markdown": out / "report.md", "json": out / "compare.json"}
    files["html"].write_text(html_page(runs, columns, notes, curves))
    files["markdown"].write_text(markdown_page(runs, columns, copy_pictures(runs, out), notes, curve_paths))
    files["json"].write_text(json.dumps(table_json(runs, columns, notes, curve_paths), indent=2) + "\n")
    return files, markdown_table(runs, columns), columns


# ---- training curves on common axes -------------------------------------------------------------

CURVES_TEXT = ("Every metric that two or more runs logged in metrics.jsonl (the same train/, valid/ or test/ "
               "key), a line per run against the epoch; the metrics only one run logged are in its own training "
               "curves, among the pictures.")


def shared_metrics(runs: list[Run]) -> list[str]:
    """The metrics two or more runs logged, in order of first appearance (the runs in their order)."""
    from .plots import curve_keys
    counts: dict[str, int] = {}
    for run in runs:
        for metric in curve_keys(run.metrics):
            counts[metric] = counts.get(metric, 0) + 1
    return [metric for metric, n in counts.items() if n >= 2]


def curve_figure(metric: str, runs: list[Run]):
    """A matplotlib Figure: `metric` against the epoch, a line per run that logged it, labelled with the
    run's name and coloured by its place among `runs` (so a run keeps its colour in every figure); points
    marked when every line is short."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from .plots import curve_points
    lines = {i: curve_points(run.metrics, metric) for i, run in enumerate(runs)}
    marker = "." if max(len(xs) for xs, _ in lines.values()) < 30 else None
    ax = Figure(figsize=(4.6, 3.1), layout="constrained").subplots()
    for i, (xs, ys) in lines.items():
        if xs:
            ax.plot(xs, ys, color=f"C{i % 10}", label=runs[i].label, marker=marker)
    ax.set(title=metric, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax.figure


def curve_files(metrics: list[str]) -> list[str]:
    """A file name per metric: its characters other than letters, digits, '.', '-' as '_' (test/elbo ->
    test_elbo), made unique with -2, -3, ..."""
    return unique_names([re.sub(r"[^A-Za-z0-9.-]+", "_", m).strip("_.") or "metric" for m in metrics])


def draw_curves(runs: list[Run], folder: Path) -> dict[str, Path]:
    """The figure of every metric two or more runs logged, as folder/<name>.png: metric -> its file."""
    from .plots import save_figure
    metrics = shared_metrics(runs)
    return {metric: save_figure(curve_figure(metric, runs), folder / f"{name}.png")
            for metric, name in zip(metrics, curve_files(metrics))}


# ---- headless Chromium --------------------------------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH ($VAEKIT_CHROMIUM first, when set)."""
    for name in (os.environ.get("VAEKIT_CHROMIUM"), *CHROMIUM_NAMES):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def chromium_binary() -> str:
    """find_chromium(), or an error saying what to install."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(f"no headless browser found (looked for {', '.join(CHROMIUM_NAMES)} on PATH, or "
                                "$VAEKIT_CHROMIUM): install Chromium, e.g. `apt-get install chromium` on Debian")
    return binary


def headless(args: list[str], timeout: float = 120) -> str:
    """Run headless Chromium on args; its stdout. Errors name the browser and its last words."""
    binary = chromium_binary()
    # root cannot run Chromium's sandbox (containers, CI); a throw-away profile keeps runs independent
    sandbox = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="vaekit-chromium-") as profile:
        command = [binary, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   "--mute-audio", f"--user-data-dir={profile}", *sandbox, *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"{binary} did not finish within {timeout} s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise BrowserError(f"{binary} exited with {done.returncode}: {' / '.join(tail)}")
    return done.stdout


def check_page(html_path: str | os.PathLike, width: int = 1400) -> dict:
    """Load the page in headless Chromium and read back what its onload script saw:
    {"images_loaded": n, "images": m, "width": px, "height": px}."""
    import re
    dom = headless([f"--window-size={width},900", "--dump-dom", Path(html_path).resolve().as_uri()])
    found = dict(re.findall(r'data-(images-loaded|page-width|page-height)="([^"]*)"', dom))
    if "images-loaded" not in found:
        raise BrowserError(f"{str(html_path)!r}: the page's onload script left no result (not a vaekit report, "
                           "or the browser ran no script)")
    loaded, total = (int(n) for n in found["images-loaded"].split("/"))
    return {"images_loaded": loaded, "images": total, "width": int(found["page-width"]),
            "height": int(found["page-height"])}


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, width: int = 1400,
               max_size: int = 16000) -> Path:
    """A PNG of the whole page as headless Chromium draws it: the window sized to the page, wide tables
    unfolded (at least `width` pixels wide, at most max_size either way)."""
    page = check_page(html_path, width)
    wide = min(max_size, max(width, page["width"]))
    if wide > width:  # what wraps (the curves) takes less height in the wider window: measure again there
        page = check_page(html_path, wide)
    size = f"{wide},{min(max_size, page['height'] + 16)}"
    png_path = Path(png_path).resolve()
    headless([f"--window-size={size}", f"--screenshot={png_path}", Path(html_path).resolve().as_uri()])
    if not png_path.is_file():
        raise BrowserError(f"headless Chromium wrote no screenshot at {str(png_path)!r}")
    return png_path
