"""The `vaelab` command. `main(argv) -> int`; nothing runs at import.

Options come from the config dataclasses (one flag per field: `latent_dim` is `--latent-dim`),
from a TOML file (`--config`, the same names as keys) or both; flags win. Bad input is one
sentence on stderr and exit code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from vaelab.config import coerce, field_types, type_name
from vaelab.errors import VaelabError

EXIT_BAD_INPUT = 2
# Model fields that come from the data, not from the user.
DERIVED_MODEL_FIELDS = ("image_shape", "num_classes")
# What an option's name and type do not say (docs/distributed.md for torchrun).
OPTION_HELP = {
    "batch-size": "; the global batch: torchrun's ranks split each batch between them",
    "lr-decay": "; the rate falls linearly to 0 over this last share of the epochs or the "
    "time budget (0.5: the second half)",
    "time-budget": "; the run's training time in all, over every --resume (30m, 2h)",
    "precision": "; fp32 or bf16: training's forward passes in bfloat16 autocast (weights, "
    "densities and every evaluation stay float32)",
    "test-every": "; score the test set after every N epochs and after the last (0: the last only)",
}
# An image folder's pixels are not binary: a density on them unless --likelihood says otherwise.
FOLDER_LIKELIHOOD = "gaussian"
RESUME_CAN_CHANGE = ("epochs", "time_budget")  # train options a --resume may set anew


def _option_table() -> dict[str, tuple[str, Any]]:
    """flag name (with dashes) -> (section, type) for every configurable field."""
    from vaelab.models import MODELS
    from vaelab.training.run import DataConfig, TrainConfig

    table: dict[str, tuple[str, Any]] = {}
    for cls in {m.config_class for m in MODELS.values()}:
        for name, tp in field_types(cls).items():
            if name not in DERIVED_MODEL_FIELDS:
                table[name.replace("_", "-")] = ("model", tp)
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        for name, tp in field_types(cls).items():
            table[name.replace("_", "-")] = (section, tp)
    return table


def _parse_text(text: str, tp: Any) -> Any:
    """A command-line string as a value of type `tp` (lists are comma-separated)."""
    args = typing.get_args(tp)
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    if tp is bool:
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
            text.lower(), text
        )
    if typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in args):
        parts = [v for v in text.replace(" ", "").split(",") if v]
        return [int(v) if v.lstrip("-").isdigit() else v for v in parts]  # bad ones: checked next
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _check_value(flag: str, value: Any, tp: Any) -> Any:
    try:
        return coerce(value, tp)
    except TypeError:
        raise VaelabError(f"--{flag} is {value!r}: expected {type_name(tp)}") from None


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise VaelabError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise VaelabError(f"config file {path} is not valid TOML: {err}") from None
    return {k.replace("_", "-"): v for k, v in raw.items()}


def gather_options(args: argparse.Namespace, table: dict) -> dict[str, Any]:
    """TOML values, then flags given on the command line; each checked against its type."""
    options = read_toml(args.config) if args.config else {}
    model = options.pop("model", None)
    if model is not None and model != args.model:
        raise VaelabError(f"config file {args.config} is for model {model!r}, not {args.model!r}")
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise VaelabError(f"config file {args.config} has unknown key(s) {', '.join(unknown)}")
    for flag in table:
        text = getattr(args, flag.replace("-", "_"), None)
        if text is not None:
            options[flag] = _parse_text(text, table[flag][1])
    return {flag: _check_value(flag, v, table[flag][1]) for flag, v in options.items()}


def build_run_config(model: str, options: dict[str, Any], table: dict, data):
    """A RunConfig for `model` from checked options and the loaded data's shape."""
    from vaelab.config import from_dict
    from vaelab.data import is_folder_spec
    from vaelab.models import get_model_class
    from vaelab.training.run import DataConfig, RunConfig, TrainConfig

    model_cls = get_model_class(model)
    sections: dict[str, dict] = {"model": {}, "data": {}, "train": {}}
    model_fields = field_types(model_cls.config_class)
    for flag, value in options.items():
        section, _ = table[flag]
        name = flag.replace("-", "_")
        if section == "model" and name not in model_fields:
            raise VaelabError(f"--{flag} does not apply to model {model}")
        sections[section][name] = value
    sections["model"]["image_shape"] = list(data.image_shape)
    if is_folder_spec(options.get("dataset", "")):
        sections["model"].setdefault("likelihood", FOLDER_LIKELIHOOD)
    if "num_classes" in model_fields and getattr(model_cls, "conditional", False):
        sections["model"]["num_classes"] = data.num_classes or 0
    return RunConfig(
        model=model,
        model_config=from_dict(model_cls.config_class, sections["model"], "model"),
        data=from_dict(DataConfig, sections["data"], "data options"),
        train=from_dict(TrainConfig, sections["train"], "train options"),
    )


def data_config(options: dict[str, Any], table: dict):
    """The DataConfig of the checked options (the data must load before the model is built)."""
    from vaelab.config import from_dict
    from vaelab.training.run import DataConfig

    fields = {f.replace("-", "_"): v for f, v in options.items() if table[f][0] == "data"}
    return from_dict(DataConfig, fields, "data options")


def check_resume_options(run_config, options: dict[str, Any], table: dict) -> None:
    """On --resume only --epochs and --time-budget may change; any other option must equal the
    run's."""
    for flag, value in options.items():
        section, _ = table[flag]
        name = flag.replace("-", "_")
        part = {
            "model": run_config.model_config,
            "data": run_config.data,
            "train": run_config.train,
        }[section]
        if name in RESUME_CAN_CHANGE or not hasattr(part, name):
            continue
        saved = getattr(part, name)
        if (list(saved) if isinstance(saved, tuple) else saved) != (
            list(value) if isinstance(value, tuple) else value
        ):
            raise VaelabError(
                f"--{flag} {value!r} differs from the resumed run's {saved!r}; "
                "only --epochs, --time-budget and --max-steps may change on --resume"
            )


def cmd_train(args: argparse.Namespace) -> int:
    from vaelab.training import distributed

    dist = distributed.setup(args.dist_timeout)  # one process, or one of torchrun's ranks
    args.quiet = args.quiet or not dist.is_main  # the other ranks train silently
    try:
        return train_or_resume(args, dist)
    finally:
        distributed.shutdown()


def train_or_resume(args: argparse.Namespace, dist) -> int:
    """A new run, or --resume (also what a torchrun restart does); rank 0 writes the report."""
    from vaelab.training import distributed
    from vaelab.training.run import CONFIG_FILE, read_config
    from vaelab.training.trainer import resume, train
    from vaelab.viz.run_report import write_run_report

    table = _option_table()
    options = gather_options(args, table)
    run = args.resume
    if not run and distributed.elastic_restart() and (Path(args.out) / CONFIG_FILE).exists():
        run = args.out  # torchrun restarted the workers: continue the run they were training
    if run:
        config, _ = read_config(run)
        if config.model != args.model:
            raise VaelabError(f"{run} is a {config.model} run, not {args.model}")
        check_resume_options(config, options, table)
        if "time-budget" in options and options["time-budget"] is None:
            raise VaelabError("--time-budget none on --resume: a run keeps its time budget; "
                              "pass a larger one to train on")  # fmt: skip
        trainer = resume(run, epochs=options.get("epochs"), max_steps=args.max_steps,
                         quiet=args.quiet, time_budget=options.get("time-budget"))  # fmt: skip
    else:
        with dist.main_first("loading the data"):  # a download happens once per node
            data = data_config(options, table).load()
        config = build_run_config(args.model, options, table, data)
        trainer = train(config, args.out, max_steps=args.max_steps, quiet=args.quiet, data=data)
    if not args.no_report and dist.is_main:
        report = write_run_report(trainer.run_dir, trainer=trainer)
        _say(args, f"report: {report}")
    _say(args, f"run: {trainer.run_dir} (epoch {trainer.state.epoch}, step {trainer.state.step})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from vaelab.training.run import load_run
    from vaelab.viz.figures import image_grid, save_figure

    if args.n < 1:
        raise VaelabError(f"--n is {args.n}: expected a positive number of samples")
    config, model = load_run(args.run)
    labels = sample_labels(model, args.n, args.label, config.model)
    images = model.generate(args.n, labels, torch.Generator().manual_seed(args.seed))
    nrow = max(1, round(args.n**0.5))
    path = save_figure(image_grid(images, nrow=nrow), args.out)
    _say(args, f"wrote {args.n} samples to {path}")
    return 0


def sample_labels(model, n: int, label: int | None, model_name: str):
    """The labels a conditional model decodes under: --label, or every class in turn."""
    import torch

    classes = model.config.num_classes if model.conditional else 0
    if label is None:
        return torch.arange(n) % classes if classes else None
    if not classes:
        raise VaelabError(f"--label needs a conditional model (cvae); this run is a {model_name}")
    if not 0 <= label < classes:
        raise VaelabError(f"--label is {label}: expected a class from 0 to {classes - 1}")
    return torch.full((n,), label)


def cmd_eval(args: argparse.Namespace) -> int:
    from vaelab.evaluation.run_eval import EVAL_FILE, evaluate_run
    from vaelab.training.run import read_config
    from vaelab.viz.run_report import write_run_report

    data = read_config(args.run)[0].data.load()  # once, for the evaluation and the report
    result = evaluate_run(args.run, k=args.k, split=args.split, limit=args.limit, data=data)
    for key, value in result.items():
        if not isinstance(value, list):
            _say(args, f"{key:<28} {value:.4g}" if isinstance(value, float) else
                 f"{key:<28} {value}")  # fmt: skip
    report = write_run_report(Path(args.run), data=data)
    _say(args, f"wrote {Path(args.run) / EVAL_FILE} and {report}")
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from vaelab.viz.tour import run_tour

    if (Path(args.out) / "models").exists():
        raise VaelabError(f"{args.out} already holds a tour: choose another --out or remove it")
    report = run_tour(args.out, quick=args.quick, lang=args.lang, quiet=args.quiet)
    _say(args, f"open {report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from vaelab import bench

    if args.pairs < 1 or args.epochs < 1:
        raise VaelabError("--pairs and --epochs must be at least 1")
    quick = {"pairs": 3, "epochs": 1, "limit": 20000} if args.quick else {}
    dataset = args.dataset or ("mnist-sample" if args.quick else "fashion-mnist")
    result = bench.bench(pairs=quick.get("pairs", args.pairs),
                         epochs=quick.get("epochs", args.epochs), dataset=dataset,
                         data_dir=args.data_dir, limit=quick.get("limit"),
                         say=lambda text: _say(args, text))  # fmt: skip
    bench.save(result, args.out)
    bench.report(result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaelab.viz.run_report import write_run_report

    _say(args, f"report: {write_run_report(Path(args.run))}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from vaelab.serve import Explorer, make_app_server, resolve_run, server_url

    run_dir, note = resolve_run(args.run)
    if note:
        _say(args, note)
    server = make_app_server(Explorer.from_run(run_dir), args.host, args.port)
    if args.quiet:  # no line per request
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"serving {run_dir} at {server_url(server)} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _say(args, "stopped")
    finally:
        server.server_close()
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from vaelab.data import describe_datasets

    for row in describe_datasets(args.data_dir):
        print(f"{row['name']:<14} {row['description']}\n{'':<14} {row['status']}")
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    from vaelab.models import MODELS

    parser = argparse.ArgumentParser(prog="vaelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument(
        "model", choices=sorted(MODELS), metavar="MODEL", help=f"one of {', '.join(sorted(MODELS))}"
    )
    p.add_argument("--config", help="a TOML file of options (same names as the flags)")
    p.add_argument("--out", default="runs/latest", help="run folder (default runs/latest)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN exactly where it stopped")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    p.add_argument("--no-report", action="store_true", help="skip figures and report.html")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others before it stops "
                        "with an error (default 600)")  # fmt: skip
    for flag, (section, tp) in _option_table().items():
        switch = {"nargs": "?", "const": "true"} if tp is bool else {}  # --flag means true
        note = OPTION_HELP.get(flag, "")
        p.add_argument(f"--{flag}", help=f"{section}: {type_name(tp)}{note}", **switch)
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="decode prior samples of a run into a PNG grid")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, help="conditional models: the class to draw")
    p.add_argument("--out", default="samples.png", help="PNG file (default samples.png)")
    _add_common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("tour", help="train the lecture's models and write its report")
    p.add_argument("--out", default="runs/tour", help="folder (default runs/tour)")
    p.add_argument("--quick", action="store_true", help="a tiny budget (for tests)")
    p.add_argument("--lang", default="en", help="en (default) or ko")
    _add_common(p)
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("eval", help="likelihood bounds, diagnostics and probes -> eval.json")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--k", type=int, default=5000, help="importance samples (default 5000)")
    p.add_argument("--split", default="test", help="test (default) or train")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of the split")
    _add_common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="vaelab's trainer vs the standard PyTorch recipe")
    p.add_argument("--quick", action="store_true", help="3 short pairs on the shipped sample")
    p.add_argument("--pairs", type=int, default=5, help="interleaved pairs (default 5)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    p.add_argument("--dataset", help="default fashion-mnist (mnist-sample with --quick)")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--out", default="benchmarks/results/bench-mlp-vae.json")
    _add_common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("serve", help="explore a run's latent space in the browser")
    p.add_argument("run", metavar="RUN", help="a run folder, or a tour folder (serves models/vae)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); the page answers only under "
                        "this name, 127.0.0.1 or localhost")  # fmt: skip
    _add_common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("report", help="(re)write a run's figures and report.html")
    p.add_argument("run", metavar="RUN")
    _add_common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("datasets", help="list the named datasets and where they are")
    p.add_argument("--data-dir", help="a folder to look in first")
    _add_common(p)
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message
        return int(exit_.code or 0)
    try:
        from vaelab.training.runtime import flush_denormals, tune_allocator

        tune_allocator()  # fewer page faults per training step (see training/runtime.py)
        if args.command != "train" and os.environ.get("WORLD_SIZE", "1") != "1":
            raise VaelabError(f"only vaelab train runs under torchrun: start vaelab "
                              f"{args.command} as one process")  # fmt: skip
        # Before the command's first parallel op: torch's worker threads, started then, take
        # the mode from this thread (training/runtime.py says why).
        with flush_denormals():
            return args.func(args)
    except VaelabError as err:
        if args.debug:
            raise
        print(f"vaelab: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("vaelab: interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
