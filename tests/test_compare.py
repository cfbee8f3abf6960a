"""`vaekit compare` and `vaekit.load` on tiny digits runs: the page's and the Markdown's numbers are the
JSON results, missing ones say "not computed", the architecture column is the family's config section,
the training curves two runs share are drawn on common axes from their metrics.jsonl, mixed data sets
and occupied folders are refused, the page needs no other file, and headless Chromium shows it with
every image loaded."""

import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit import compare as comparelib
from vaekit import families
from vaekit import report as reportlib
from vaekit.cli import main

CPU = ["--device", "cpu", "--no-progress"]
D = {name: i for i, name in enumerate(comparelib.DESCRIPTION)}  # a description's place in a table row
VAE = ["run", "--hidden", "16", "--latent", "2", "--epochs", "2", "--batch-size", "64", "--num-samples", "20",
       "--set", "eval.chunk_size=8", "--set", "eval.iwae_samples=[1, 5]", *CPU]
LINEAR = ["train", "--model", "linear", "--binarization", "none", "--latent", "2", "--epochs", "2", *CPU]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE trained, evaluated and drawn; a linear-Gaussian model trained only (no eval.json)."""
    # the feature network of --evaluate / --floor is trained once per session, not in ~/.cache (as test_quality)
    os.environ.setdefault("VAEKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    root = tmp_path_factory.mktemp("runs")
    assert main([*VAE, "--out", str(root / "vae")]) == 0
    assert main([*LINEAR, "--out", str(root / "linear")]) == 0
    return root


class Cells(HTMLParser):
    """Every element carrying data-result: (run, source, name) -> (attributes, text)."""

    def __init__(self):
        super().__init__()
        self.cells, self.open, self.images, self.body = {}, None, [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-result" in attrs:
            self.open = (attrs["data-run"], attrs["data-source"], attrs["data-result"])
            self.cells[self.open] = (attrs, "")
        if tag == "img":
            self.images.append(attrs)

    def handle_data(self, data):
        if self.open:
            attrs, text = self.cells[self.open]
            self.cells[self.open] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "td":
            self.open = None


def parse_page(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text())
    return cells


def results_of(run_dir: Path, source: str) -> dict:
    path = run_dir / comparelib.SOURCES[source]
    return json.loads(path.read_text())["results"] if path.is_file() else {}


def shown_equals(text: str, value: float | None) -> bool:
    """A rounded number on the page stands for `value`: within half its last digit."""
    digits = len(text.split(".")[1]) if "." in text else 0
    return value is not None and abs(float(text) - value) <= 0.5 * 10 ** -digits * (1 + 1e-9) + 1e-12


def check_cell(text: str, record: dict) -> None:
    """'value ± stderr [unit] (side)' shows the record: its value, its error, its side."""
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text.split("(")[0] if "(" in text else text)
    assert shown_equals(numbers[0], record["value"]), (text, record)
    if record["stderr"] is not None:
        assert "±" in text and shown_equals(numbers[1], record["stderr"]), (text, record)
    assert comparelib.SIDE_MARKS[record["side"]] in text


def markdown_rows(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The result tables of report.md (those before its first section) joined: the header and each run's
    cells, as one table with the run named once."""
    text = path.read_text().split("\n## ")[0]
    tables = [[[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in block.splitlines()
               if line.startswith("| ")] for block in text.split("\n\n")]
    header, rows = [], {}
    for table in (t for t in tables if t):
        assert table[0][0] == "run" and all(len(cells) == len(table[0]) for cells in table)
        header += table[0][1 if header else 0:]
        for cells in table[1:]:  # (the |---| line is no "| " line)
            rows[cells[0]] = rows.get(cells[0], [cells[0]]) + cells[1:]
    return header, rows


def test_page_and_markdown_numbers_are_the_json_results(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", str(runs / "vae"), str(runs / "linear"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| run | family |") and f"wrote {out / 'report.html'}" in printed
    cells = parse_page(out / "report.html").cells
    table = json.loads((out / "compare.json").read_text())
    header, rows = markdown_rows(out / "report.md")
    assert [c for c in header[len(comparelib.DESCRIPTION):]] == [
        c["label"] + (f" [{c['unit']}]" if c["unit"] else "") for c in table["columns"]]
    assert set(rows) == {"vae", "linear"}
    checked = 0
    for label in ("vae", "linear"):
        for source in comparelib.SOURCES:
            for name, record in results_of(runs / label, source).items():
                attrs, text = cells[(label, source, name)]
                assert float(attrs["data-value"]) == record["value"]  # exactly the JSON's number
                assert attrs["data-stderr"] == ("" if record["stderr"] is None else repr(record["stderr"]))
                assert attrs["data-side"] == record["side"] and attrs["data-unit"] == record["unit"]
                check_cell(text, record)
                index = [i for i, c in enumerate(table["columns"]) if (c["source"], c["name"]) == (source, name)][0]
                check_cell(rows[label][len(comparelib.DESCRIPTION) + index], record)
                assert table["rows"][["vae", "linear"].index(label)]["results"][f"{source}:{name}"] == record
                checked += 1
    assert checked == len(results_of(runs / "vae", "eval")) >= 6


def test_missing_results_say_not_computed_and_the_columns_are_grouped(runs, tmp_path):
    report = comparelib.compare([runs / "linear", runs / "vae"], out=tmp_path / "r", progress=False)
    cells = parse_page(report.files["html"]).cells
    vae_results = results_of(runs / "vae", "eval")
    for name in vae_results:  # the linear run was never evaluated: no number is made up for it
        attrs, text = cells[("linear", "eval", name)]
        assert text.strip() == "not computed" and "data-value" not in attrs
    _, rows = markdown_rows(report.files["markdown"])
    assert rows["linear"][D["test set"]] == "not computed"  # eval.json would say
    assert rows["linear"][len(comparelib.DESCRIPTION):] == ["not computed"] * len(vae_results)
    groups = [list(comparelib.GROUPS).index(c.group) for c in report.columns]
    assert groups == sorted(groups) and report.columns[0].name == next(iter(vae_results))
    described = [rows["vae"][D[d]] for d in ("family", "data", "binarisation", "epochs")]
    assert described == ["vae", "digits", "dynamic", "2"]
    assert rows["vae"][D["training time"]].endswith(" s") and int(rows["vae"][D["parameters"]].replace(",", "")) > 0
    assert re.fullmatch(r"cpu: (1 thread|\d+ threads)", rows["vae"][D["hardware"]])  # training times are only comparable with it


def test_hardware_lists_every_device_a_run_was_trained_on_in_order():
    rows = [{"epoch": 1, "hardware": "cuda: NVIDIA H200"}, {"epoch": 2, "hardware": "cpu: 2 threads"},
            {"epoch": 3, "hardware": "cuda: NVIDIA H200"}]
    assert comparelib.hardware(rows) == "cuda: NVIDIA H200, cpu: 2 threads"
    assert comparelib.hardware([{"epoch": 1}]) == "not logged"  # runs trained before it was logged


def test_the_page_needs_no_other_file(runs, tmp_path):
    report = comparelib.compare([runs / "vae", runs / "linear"], out=tmp_path / "r", progress=False)
    page = report.files["html"].read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    links += re.findall(r"url\(\s*['\"]?([^'\")]+)", page, flags=re.I)
    assert links and all(link.startswith("data:") for link in links), [l[:40] for l in links if not l.startswith("data:")]
    assert "<link" not in page.lower() and "@import" not in page
    images = parse_page(report.files["html"]).images
    pictures = {(i["data-run"], i["data-picture"]) for i in images if "data-picture" in i}
    assert pictures >= {("vae", "samples"), ("vae", "reconstructions"), ("vae", "training_curves")}
    markdown = report.files["markdown"].read_text()
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):  # the Markdown's pictures lie beside it
        assert (report.out / target).is_file(), target
    assert "![samples of vae](pictures/vae/samples.png)" in markdown


def settings_of(text: str) -> dict:
    """The architecture column read back: 'key=value key=value' -> {key: value} (values JSON, else strings)."""
    def value(v):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return {k: value(v) for k, v in re.findall(r"(?:^| )(\w+)=(.*?)(?= \w+=|$)", text)}


def test_the_architecture_column_is_the_family_config_section(runs, tmp_path):
    report = comparelib.compare([runs / "vae", runs / "linear"], out=tmp_path / "r", progress=False)
    _, rows = markdown_rows(report.files["markdown"])
    page = report.files["html"].read_text()
    saved = {row["label"]: row for row in json.loads(report.files["json"].read_text())["rows"]}
    for label in ("vae", "linear"):
        config = json.loads((runs / label / "config.json").read_text())
        section = {k: v for k, v in config[config["model"]["name"]].items() if v is not None}
        text = rows[label][D["architecture"]]
        assert list(settings_of(text).items()) == list(section.items()), (text, section)  # every field, in order
        cell = re.search(rf'<tr data-run="{label}">.*?<td data-description="architecture">(.*?)</td>', page).group(1)
        assert html.unescape(cell) == text == saved[label]["description"]["architecture"]
    assert "hidden=[16]" in rows["vae"][D["architecture"]] and "latent=2" in rows["linear"][D["architecture"]]
    assert comparelib.architecture_text({"hidden": [200, 200], "latent": 50, "activation": "tanh", "preset": None,
                                         "tag": "a b", "on": True}) == \
        'hidden=[200, 200] latent=50 activation=tanh tag="a b" on=true'


def logged_metrics(run_dir: Path) -> tuple[list[dict], list[str]]:
    """metrics.jsonl's rows and its metrics (numeric train/, valid/, test/ keys), read here independently."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    keys = dict.fromkeys(k for r in rows for k, v in r.items()
                         if k.split("/")[0] in ("train", "valid", "test") and isinstance(v, (int, float)))
    return rows, list(keys)


def test_training_curves_two_runs_share_are_drawn_on_common_axes(runs, tmp_path):
    report = comparelib.compare([runs / "vae", runs / "linear"], out=tmp_path / "r", progress=False)
    (vae_rows, vae_keys), (linear_rows, linear_keys) = logged_metrics(runs / "vae"), logged_metrics(runs / "linear")
    shared = [k for k in vae_keys if k in linear_keys]
    assert "test/elbo" in shared and "train/elbo" in vae_keys and "train/elbo" not in linear_keys  # not vacuous
    curves = json.loads(report.files["json"].read_text())["curves"]
    assert list(curves) == shared  # a figure per shared metric, none for a metric of one run
    images = {i["data-curve"]: i for i in parse_page(report.files["html"]).images if "data-curve" in i}
    markdown = report.files["markdown"].read_text()
    for metric, path in curves.items():
        assert png_size(report.out / path) == (460, 310) and f"![{metric}]({path})" in markdown
        assert images[metric]["src"].startswith("data:image/png;base64,")
        lines = {line.get_label(): line for line in reportlib.curve_figure(metric, report.runs).axes[0].get_lines()}
        assert list(lines) == ["vae", "linear"]  # one axis, every run on it
        for label, rows in (("vae", vae_rows), ("linear", linear_rows)):  # each line is the run's JSON rows
            assert list(lines[label].get_xdata()) == [r["epoch"] for r in rows if metric in r]
            assert list(lines[label].get_ydata()) == [r[metric] for r in rows if metric in r]
            assert len(lines[label].get_xdata()) == 2  # two epochs logged
    assert lines["vae"].get_color() != lines["linear"].get_color()


@pytest.fixture(scope="module")
def other_data_run(runs, tmp_path_factory):
    """A linear model on another data set: a small .npz of 4x4 images."""
    root = tmp_path_factory.mktemp("npz")
    x = np.random.default_rng(0).random((120, 16)).astype(np.float32)
    np.savez(root / "tiny.npz", train=x[:100], test=x[100:])
    run = root / "npz-linear"
    assert main([*LINEAR, "--data", "npy", "--data-path", str(root / "tiny.npz"), "--epochs", "1",
                 "--out", str(run)]) == 0
    return run


def test_mixed_data_sets_are_refused_unless_allowed(runs, other_data_run, tmp_path, capsys):
    out = tmp_path / "mixed"
    assert main(["compare", str(runs / "vae"), str(other_data_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different data sets" in err and "--allow-mixed-data" in err and "'digits'" in err
    assert not out.exists()  # refused before anything is written
    report = comparelib.compare([runs / "vae", other_data_run], out=out, allow_mixed_data=True, progress=False)
    _, rows = markdown_rows(report.files["markdown"])
    assert rows["vae"][D["data"]] == "digits" and rows["npz-linear"][D["data"]].startswith("npy (")


def test_an_occupied_out_folder_is_refused_unless_forced(runs, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["compare", str(runs / "vae"), "--out", str(out)]) == 2
    assert "already holds files" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert main(["compare", str(runs / "vae"), "--out", str(out), "--force"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("busy.replaced-")]
    assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "mine" and (out / "report.html").is_file()
    for folder in (runs / "vae", runs):  # never a run's folder, nor one holding a run: --force would move it
        assert main(["compare", str(runs / "vae"), "--out", str(folder), "--force"]) == 2
        assert "a run compared (vae)" in capsys.readouterr().err and (runs / "vae" / "config.json").is_file()


@pytest.mark.parametrize("argv, needle", [
    (["nowhere"], "not a folder"),
    (["{tmp}"], "no config.json"),
    (["{vae}", "{vae}"], "named more than once"),
    (["{vae}", "--evaluate", "--num-samples", "0"], "num_samples: expected a positive integer"),
])
def test_errors_exit_2_and_name_the_problem(runs, tmp_path, capsys, argv, needle):
    argv = [a.format(tmp=tmp_path, vae=runs / "vae") for a in argv]
    assert main(["compare", *argv, "--out", str(tmp_path / "out")]) == 2
    assert needle in capsys.readouterr().err


def test_evaluate_computes_what_is_missing_and_floor_adds_the_real_images(runs, tmp_path):
    vae, run = (shutil.copytree(runs / name, tmp_path / name) for name in ("vae", "linear"))  # copies: written to
    report = comparelib.compare([vae, run], out=tmp_path / "r", evaluate=True, floor=True,
                                num_samples=10, quality_samples=100, device="cpu", progress=False)
    assert json.loads((run / "eval.json").read_text())["num_samples"] == 10
    assert json.loads((run / "quality.json").read_text())["num_samples"] == 100
    assert json.loads((vae / "eval.json").read_text()) == json.loads((runs / "vae" / "eval.json").read_text())
    cells = parse_page(report.files["html"]).cells
    for source in comparelib.SOURCES:
        for name, record in results_of(run, source).items():
            assert float(cells[("linear", source, name)][0]["data-value"]) == record["value"]
    floor = [r for r in report.runs if r.path is None]
    assert [r.label for r in floor] == ["floor: digits"]
    saved = json.loads(report.files["json"].read_text())["rows"][-1]["results"]
    assert float(cells[("floor: digits", "quality", "frechet_distance")][0]["data-value"]) == \
        saved["quality:frechet_distance"]["value"]
    assert cells[("floor: digits", "eval", "nll")][1] == "not computed"


def test_results_of_an_older_checkpoint_are_flagged(runs, tmp_path):
    run = shutil.copytree(runs / "vae", tmp_path / "vae")
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0  # eval.json is of epoch 2
    report = comparelib.compare([run], out=tmp_path / "r", progress=False)
    assert report.runs[0].description["epochs"] == "3"
    assert any("eval.json is of epoch 2" in note and "--evaluate" in note for note in report.runs[0].notes)
    assert "eval.json is of epoch 2" in report.files["html"].read_text()


def test_compare_knows_no_family_by_name():
    for module in (comparelib, reportlib):
        source = Path(module.__file__).read_text()
        for name in families.names():
            assert f'"{name}"' not in source and f"'{name}'" not in source, (module.__name__, name)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_headless_chromium_shows_the_page_with_every_image(runs, tmp_path):
    if reportlib.find_chromium() is None:
        pytest.skip(f"no headless Chromium on PATH (looked for {', '.join(reportlib.CHROMIUM_NAMES)}): "
                    "apt-get install chromium")
    report = comparelib.compare([runs / "vae", runs / "linear"], out=tmp_path / "r", screenshot_png=True,
                                progress=False)
    page = reportlib.check_page(report.files["html"])
    assert page["images"] == len(parse_page(report.files["html"]).images) >= 3
    assert page["images_loaded"] == page["images"]  # every embedded picture decoded
    width, height = png_size(report.files["png"])  # the whole page, as laid out in a window that wide
    there = page if width == 1400 else reportlib.check_page(report.files["html"], width)
    assert width >= 1400 and height >= there["height"]
    broken = report.files["html"].read_text().replace('src="data:image/png;base64,', 'src="missing.png#', 1)
    (tmp_path / "broken.html").write_text(broken)
    assert reportlib.check_page(tmp_path / "broken.html")["images_loaded"] == page["images"] - 1  # the check bites


def test_load_returns_the_trained_model(runs):
    model = vaekit.load(runs / "vae")
    assert isinstance(model, torch.nn.Module) and not model.training
    assert next(model.parameters()).device == torch.device("cpu")
    assert model.sample(3).shape == (3, 64)
    with pytest.raises(FileNotFoundError, match="not a vaekit run folder"):
        vaekit.load(runs)
    with pytest.raises(ValueError, match="no such folder.*run folder.*published model: digits-vae"):
        vaekit.load("no-such-model")
    with pytest.raises(TypeError, match="str or os.PathLike"):
        vaekit.load(3)


def test_import_vaekit_does_no_work():
    code = "import sys, vaekit; assert callable(vaekit.load) and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("value, stderr, shown", [
    (31.823211, 0.1145, "31.82 ± 0.11"), (0.9256, 0.0026242, "0.9256 ± 0.0026"), (54.266998, None, "54.27"),
    (0.2, 2.5e-18, "0.200000 ± 0.000000"), (0.0, 0.0, "0 ± 0"), (math.inf, None, "inf"), (1234.5, 30.0, "1234 ± 30"),
])
def test_numbers_are_rounded_to_their_error(value, stderr, shown):
    assert comparelib.number_text(comparelib.Result(value, stderr, "test", "estimate")) == shown
