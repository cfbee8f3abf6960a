"""The `vaekit` command: a thin layer over the library.

    vaekit run                       train, evaluate and draw on the default data set (sklearn digits)
    vaekit train --config c.toml     train; flags and --set section.key=value override the file
    vaekit train --resume RUN        continue a run from its last checkpoint
    vaekit evaluate RUN              importance-sampled test log-likelihood, ELBO, IWAE bounds
    vaekit evaluate RUN --gap        log p(x) - ELBO, split into approximation and amortisation gaps
    vaekit evaluate RUN --ais        also log p(x) of the decoder by AIS with HMC, BDMC bracket (VAE, linear, GAN)
    vaekit sample|reconstruct|interpolate RUN    PNG grids in RUN/pictures/
    vaekit quality RUN               sample quality: Fréchet and kernel distances, precision, recall, ...
    vaekit quality --floor --data mnist          the same for real training images (the floor)
    vaekit zoo                       the published models; RUN = zoo:NAME in any command (e.g. zoo:digits-vae)
    vaekit compare RUN [RUN ...]     one table of every run's results, pictures side by side (HTML, Markdown)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import config as configlib

# flag -> config key; each flag is sugar for --set key=value. "family." stands for the section of the
# chosen model family ([vae], [linear], ...): --latent 20 sets vae.latent for a VAE.
CONFIG_FLAGS = {
    "--data": ("data.name", "data set: digits (embedded), mnist, fashion-mnist, npy"),
    "--data-dir": ("data.data_dir", "folder holding the IDX files of mnist / fashion-mnist"),
    "--data-path": ("data.path", "a .npy/.npz file of images (with --data npy)"),
    "--binarization": ("data.binarization", "dynamic | static | threshold | none"),
    "--num-valid": ("data.num_valid", "examples held out of train for validation"),
    "--model": ("model.name", "model family: {families}"),
    "--preset": ("family.preset", "architecture preset of the family, e.g. vae: examples (784-400-20 ReLU), "
                                  "burda (784-200-200-50 tanh)"),
    "--hidden": ("family.hidden", "hidden layer sizes, comma separated, e.g. 200,200"),
    "--latent": ("family.latent", "latent dimension"),
    "--likelihood": ("family.likelihood", "vae: bernoulli | gaussian"),
    "--epochs": ("train.epochs", "training epochs"),
    "--batch-size": ("train.batch_size", "training batch size"),
    "--lr": ("train.lr", "learning rate (of train.optimizer: adam | sgd)"),
    "--objective": ("train.objective", "elbo | iwae"),
    "--train-samples": ("train.num_samples", "importance samples per example in the objective"),
    "--seed": ("train.seed", "random seed"),
    "--device": ("train.device", "auto | cpu | cuda | cuda:N"),
    "--threads": ("train.num_threads", "CPU threads (0: torch's default)"),
    "--num-samples": ("eval.num_samples", "importance samples for the test log-likelihood"),
    "--out": ("out", "run folder (default runs/<data>-<model>-<time>)"),
}


def _override(flag: str, value: str, family: str) -> str:
    key = CONFIG_FLAGS[flag][0].replace("family.", f"{family}.")
    if flag == "--hidden":
        value = "[" + value + "]"
    elif configlib.is_string_key(key):
        value = json.dumps(value)  # a path or name stays a string, whatever it looks like
    return f"{key}={value}"


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="TOML file with [data] [model] [train] [eval] tables")
    from . import families
    for flag, (key, text) in CONFIG_FLAGS.items():
        p.add_argument(flag, metavar="V", help=f"{text.format(families=', '.join(families.names()))} ({key})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr_schedule=constant (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")


def _family_name(args: argparse.Namespace, base: dict) -> str:
    """The model family the command line chooses: --model, else --set model.name=..., else the base."""
    values = configlib.apply_overrides({"model": dict(base.get("model", {}))},
                                       [o for o in args.set if o.strip().startswith("model.name")])
    return args.model or values["model"].get("name", configlib.ModelConfig.name)


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> configlib.RunConfig:
    base = configlib.read_toml(args.config) if base is None else base
    family = _family_name(args, base)
    given = [(flag, value) for flag in CONFIG_FLAGS if (value := getattr(args, flag[2:].replace("-", "_"))) is not None]
    overrides = [_override(flag, value, family) for flag, value in given]
    overrides += args.set + (["train.progress=false"] if args.no_progress else [])
    try:
        return configlib.from_dict(configlib.apply_overrides(base, overrides))
    except configlib.ConfigError as e:  # name the flag the user typed beside the key it sets
        keys = {_override(flag, value, family).split("=")[0]: flag for flag, value in given}
        blamed = [f"{flag} sets {key}" for key, flag in keys.items() if str(e).startswith(key)]
        raise configlib.ConfigError(f"{e}" + (f" ({blamed[0]})" if blamed else "")) from None


def cmd_train(args):
    """Train (or resume); returns the Trainer, whose model and data the caller may reuse."""
    from .runs import configure_process, run_config
    from .train import Trainer
    if args.resume:
        if args.config or args.out or args.force:
            given = [f for f, v in (("--config", args.config), ("--out", args.out), ("--force", args.force)) if v]
            raise configlib.ConfigError(f"{', '.join(given)} beside --resume: a resumed run keeps its folder and its "
                                        "settings (flags may change train.epochs, train.time_limit_minutes, ...)")
        run_dir = Path(args.resume)
        cfg = config_from_args(args, configlib.to_dict(run_config(run_dir)))
        configure_process(cfg.train)
        trainer = Trainer(cfg, run_dir, resume=True)
        if trainer.epoch >= cfg.train.epochs:
            print(f"{str(run_dir)!r} has finished: epoch {trainer.epoch} of {cfg.train.epochs}, nothing to train "
                  "(raise --epochs to train further)")
            return trainer
    else:
        cfg = config_from_args(args)
        configure_process(cfg.train)
        trainer = Trainer(cfg, force=args.force)
    print(f"run folder: {trainer.run_dir}")
    trainer.fit()
    return trainer


def cmd_run(args) -> None:
    from . import pictures
    from .evaluate import evaluate_model, format_result
    trainer = cmd_train(args)  # the trained model and loaded data serve evaluation and pictures too
    model = trainer.model.eval()
    # train.progress (set by --no-progress, or by the config) governs the evaluation's bar too
    print(format_result(evaluate_model(trainer.run_dir, trainer.cfg, model, trainer.data,
                                       progress=trainer.cfg.train.progress)))
    for path in pictures.draw(trainer.run_dir, model, trainer.data, trainer.family):
        print(f"wrote {path}")


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate_run, format_result
    if args.gap:
        return cmd_gap(args)
    result = evaluate_run(args.run, args.num_samples, args.device, progress=not args.no_progress, ais=args.ais,
                          chunk_size=args.chunk_size, batch_size=args.batch_size, data_dir=args.data_dir,
                          compile=args.compile, decoder_ais_steps=args.ais_steps,
                          decoder_ais_chains=args.ais_chains, decoder_ais_examples=args.ais_examples,
                          bdmc_examples=args.bdmc_examples)
    print(format_result(result))
    print(f"wrote {Path(args.run) / 'eval.json'}")


def cmd_gap(args) -> None:
    from .gap import format_gap, gap_report
    from .protocols import LatentVariableModel
    from .runs import load_run, prepare_data
    if args.compile:
        raise ValueError("--compile: the gap report runs eagerly; --compile applies to the importance-sampled "
                         "evaluation (vaekit evaluate RUN --compile)")
    cfg, model = load_run(args.run, args.device, data_dir=args.data_dir)
    if not isinstance(model, LatentVariableModel):
        raise ValueError(f"--gap: the gap log p(x) - ELBO needs a model with an approximate posterior q(z|x); "
                         f"a {cfg.model.name!r} model has none")
    test = prepare_data(cfg, next(model.parameters()).device).test
    if args.gap_examples < 1:
        raise ValueError(f"--gap-examples: expected a positive number, got {args.gap_examples}")
    report = gap_report(model, test.x[:args.gap_examples], num_samples=args.num_samples or cfg.eval.num_samples,
                        optimise_steps=args.gap_steps)
    print(format_gap(report))
    (Path(args.run) / "gap.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {Path(args.run) / 'gap.json'}")


def picture_command(which: str):
    def cmd(args) -> None:
        from . import families, pictures
        from .runs import load_run, prepare_data
        cfg, model = load_run(args.run, args.device)
        family = families.get(cfg.model.name)
        extra = ("latent",) if which == "samples" and "latent" in family.pictures else ()
        pictures.check(family, (which, *extra))  # before the data are loaded
        for path in pictures.draw(Path(args.run), model, prepare_data(cfg, next(model.parameters()).device),
                                  family, which=(which, *extra)):
            print(f"wrote {path}")
    return cmd


def cmd_quality(args) -> None:
    from . import yardstick
    from .results import format_line, from_json
    if (args.run is not None) == (args.floor or args.build_features):
        raise ValueError("quality: expected a RUN folder, or --floor / --build-features with --data (not both)")
    if args.inception and args.run is None:
        raise ValueError("quality: --inception scores a RUN's samples; it does not apply to --floor / --build-features")
    if args.run is not None:
        report = yardstick.run_quality(args.run, args.num_samples, args.device, progress=not args.no_progress,
                                       inception=args.inception)
        print(f"sample quality of {args.run} [{report['data']}, {report['num_samples']} samples against "
              f"{report['reference']}, {report['seconds']} s]")
        results = from_json(report["results"])
        memory = report["memorisation"]
        print(f"nearest training image in feature space, median distance: samples {memory['samples_to_train'][2]:.3f}, "
              f"test images {memory['test_to_train'][2]:.3f} (ratio {memory['median_ratio']:.2f}; well below 1: "
              f"copies); pairs in {report['picture']}")
    else:
        results = _data_quality(args)
    for name, r in results.items():
        print(format_line(name, r))
    if args.run is not None:
        print(f"wrote {Path(args.run) / 'quality.json'}")


def _data_quality(args) -> dict:
    """--build-features: the feature network and its test accuracy; --floor: the real training images scored."""
    from . import yardstick
    from .data import load_dataset
    from .runs import resolve_device
    device = resolve_device(args.device, "--device")
    sets = {k: v.to(device) for k, v in load_dataset(args.data, args.data_dir).items()}
    net, info = yardstick.feature_network(sets["train"], progress=not args.no_progress)
    print(f"feature network of {args.data}: {'read from' if info['loaded'] else 'trained, saved to'} {info['path']} "
          f"(sha256 {info['weights_sha256'][:16]}...)")
    if args.floor:
        return yardstick.floor(sets["train"], sets["test"], args.num_samples)
    return {"feature_accuracy": yardstick.feature_accuracy(net, sets["test"])}


def cmd_compare(args) -> None:
    from .compare import compare
    report = compare(args.runs, out=args.out, force=args.force, allow_mixed_data=args.allow_mixed_data,
                     evaluate=args.evaluate, floor=args.floor, num_samples=args.num_samples,
                     quality_samples=args.quality_samples, device=args.device, screenshot_png=args.screenshot,
                     progress=not args.no_progress)
    print(report.markdown_table)
    for path in report.files.values():
        print(f"wrote {path}")


def add_compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by vaekit train (one data set)")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default runs/compare-<time>)")
    p.add_argument("--force", action="store_true",
                   help="when the --out folder holds files, move them aside to <out>.replaced-<time> first")
    p.add_argument("--allow-mixed-data", action="store_true", help="put runs of different data sets in one table")
    p.add_argument("--evaluate", action="store_true",
                   help="first compute eval.json / quality.json where missing or older than the checkpoint")
    p.add_argument("--floor", action="store_true", help="add a row per data set: real training images scored "
                                                        "as samples (the floor of the sample-quality columns)")
    p.add_argument("--num-samples", type=int, help="--evaluate: importance samples (default: each run's eval config)")
    p.add_argument("--quality-samples", type=int, help="--evaluate, --floor: images scored (default: the run's "
                                                       "eval.quality_samples; the floor: 10000)")
    p.add_argument("--screenshot", action="store_true", help="also report.png, the page drawn by headless Chromium")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (for --evaluate, --floor)")
    p.add_argument("--no-progress", action="store_true")


def _resolve_zoo(args) -> None:
    """RUN arguments "zoo:NAME" name published models (vaekit.zoo): commands get a writable copy."""
    from . import zoo
    try:
        if isinstance(getattr(args, "run", None), str):
            args.run = zoo.resolve(args.run)
        if isinstance(getattr(args, "runs", None), list):
            args.runs = [zoo.resolve(r) for r in args.runs]
    except KeyError as e:
        raise ValueError(e.args[0]) from None


def cmd_zoo(args) -> None:
    """The published models with the figures they were published with."""
    from . import zoo
    from .results import format_line, from_json
    for name in zoo.names():
        info = zoo.published(name)
        print(f"{name}: {info['summary']}\n  {info['docs']}; made by: {info['command']}")
        for key, r in from_json(info["results"]).items():
            print("  " + format_line(key, r))


COMMANDS = {
    "run": (cmd_run, "train, evaluate and draw pictures in one go"),
    "train": (cmd_train, "train a model"),
    "evaluate": (cmd_evaluate, "test log-likelihood (importance sampling), ELBO and IWAE bounds of a run"),
    "sample": (picture_command("samples"), "samples of a run (and, for a 2-D latent, its latent space)"),
    "reconstruct": (picture_command("reconstructions"), "test images beside their reconstructions"),
    "interpolate": (picture_command("interpolations"), "decoded interpolations between test images"),
    "quality": (cmd_quality, "sample quality of a run in a classifier's feature space (any family)"),
    "compare": (cmd_compare, "one report of several runs: their results in one table, pictures side by side"),
    "zoo": (cmd_zoo, "the published models (RUN = zoo:NAME in any command) and their published figures"),
}


def add_quality_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder written by vaekit train")
    p.add_argument("--num-samples", type=int, help="images to score (default: the run's eval.quality_samples; "
                                                   "--floor: 10000 training images)")
    p.add_argument("--floor", action="store_true", help="score real training images instead of a model's")
    p.add_argument("--inception", action="store_true",
                   help="also the standard FID with Inception-v3 (needs torch-fidelity and its weights "
                        "file placed locally; see vaekit.inception)")
    p.add_argument("--build-features", action="store_true",
                   help="train (or find in the cache) the data set's feature network and print its accuracy")
    p.add_argument("--data", default="digits", help="data set for --floor / --build-features")
    p.add_argument("--data-dir", help="folder of the data set's files (mnist, fashion-mnist)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-samples", type=int, help="importance samples (default: the run's eval config)")
    p.add_argument("--chunk-size", type=int, help="samples at a time (eval.chunk_size; memory ~ "
                                                  "batch x chunk x D floats)")
    p.add_argument("--batch-size", type=int, help="test images at a time (eval.batch_size)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the log importance weights (eval.compile): the same draws, the "
                        "element-wise work fused; worth its compile time for large K")
    p.add_argument("--data-dir", help="where the run's data set lives on this machine, if not where it was "
                                      "trained (the files are checked against their checksums)")
    p.add_argument("--gap", action="store_true",
                   help="report log p(x) - ELBO split into approximation and amortisation gaps, "
                        "active units and KL per dimension (writes gap.json)")
    p.add_argument("--gap-examples", type=int, default=500, help="test examples in the gap report")
    p.add_argument("--gap-steps", type=int, default=500,
                   help="Adam steps of the per-example q* behind the amortisation split")
    p.add_argument("--ais", action="store_true",
                   help="also log p(x) of the decoder by AIS with HMC (VAE, linear, GAN with an "
                        "observation model), the BDMC bracket on simulated data, AIS vs IS")
    p.add_argument("--ais-steps", type=int, help="intermediate distributions (eval.decoder_ais_steps)")
    p.add_argument("--ais-chains", type=int, help="chains per image (eval.decoder_ais_chains)")
    p.add_argument("--ais-examples", type=int, help="test images scored (eval.decoder_ais_examples)")
    p.add_argument("--bdmc-examples", type=int, help="simulated images of the BDMC bracket "
                                                     "(eval.bdmc_examples; 0: off)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaekit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(fn=fn)
        if name in ("run", "train"):
            add_config_args(p)
            p.add_argument("--force", action="store_true",
                           help="when the --out folder holds files, move them aside to <out>.replaced-<time> first")
            if name == "train":
                p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
            else:
                p.set_defaults(resume=None)
        elif name == "compare":
            add_compare_args(p)
        elif name == "quality":
            add_quality_args(p)
        elif name != "zoo":
            p.add_argument("run", help="run folder written by vaekit train, or zoo:NAME (a published model)")
            p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
            p.add_argument("--no-progress", action="store_true")
            if name == "evaluate":
                add_evaluate_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .train import TrainingDiverged  # torch loads only once a command runs, not for --help
    try:
        _resolve_zoo(args)
        args.fn(args)
        sys.stdout.flush()
    except (configlib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"vaekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"vaekit {args.command}: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"vaekit {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vaekit evaluate RUN | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
