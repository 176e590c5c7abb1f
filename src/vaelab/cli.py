"""vaelab: train, evaluate, sample, explore and export latent-variable models of images.

The `vaelab` command: `main(argv) -> int`; nothing runs at import.

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
from typing import Any, Literal

import tomllib

from vaelab.config import choices, coerce, field_types, type_name
from vaelab.errors import VaelabError

EXIT_BAD_INPUT = 2
# Model fields that come from the data, not from the user.
DERIVED_MODEL_FIELDS = ("image_shape", "num_classes", "dataset_size")
# What an option's name and type do not say (docs/distributed.md for torchrun).
OPTION_HELP = {
    "batch-size": "; the global batch: torchrun's ranks split each batch between them",
    "lr-decay": "; the rate falls linearly to 0 over this last share of the epochs or the "
    "time budget (0.5: the second half)",
    "time-budget": "; the run's training time in all, over every --resume (30m, 2h)",
    "precision": "; bf16: training's forward passes in bfloat16 autocast (weights, densities "
    "and every evaluation stay float32)",
    "test-every": "; score the test set after every N epochs and after the last (0: the last only)",
}
# An image folder's pixels are not binary: a density on them unless --likelihood says otherwise.
FOLDER_LIKELIHOOD = "gaussian"
RESUME_CAN_CHANGE = ("epochs", "time_budget")  # train options a --resume may set anew


def _option_table() -> dict[str, tuple[str, Any]]:
    """flag name (with dashes) -> (section, type) for every configurable field."""
    from vaelab.models import MODELS
    from vaelab.run import DataConfig, TrainConfig

    table: dict[str, tuple[str, Any]] = {}
    for cls in sorted({m.config_class for m in MODELS.values()}, key=lambda c: c.__name__):
        for name, tp in field_types(cls).items():
            flag = name.replace("_", "-")
            if name not in DERIVED_MODEL_FIELDS:
                table[flag] = ("model", _either(table[flag][1], tp) if flag in table else tp)
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        for name, tp in field_types(cls).items():
            table[name.replace("_", "-")] = (section, tp)
    return table


def _either(first: Any, second: Any) -> Any:
    """One flag's type where two model configs give a field different sets of choices: any of
    both (the chosen model's config checks its own set)."""
    if first == second or not (choices(first) and choices(second)):
        return first
    either = Literal[tuple(dict.fromkeys(choices(first) + choices(second)))]
    optional = type(None) in (*typing.get_args(first), *typing.get_args(second))
    return either | None if optional else either


def _parse_text(text: str, tp: Any) -> Any:
    """A command-line string as a value of type `tp` (lists are comma-separated)."""
    args = typing.get_args(tp)
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    for choice in choices(tp):  # a Literal's: "1" is the choice 1 and "a" the choice "a"
        if text == str(choice):
            return choice
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
    from vaelab.run import DataConfig, RunConfig, TrainConfig

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
    data_options = from_dict(DataConfig, sections["data"], "data options")
    train_images = len(data.train_images) - data_options.validation  # what the trainer trains on
    sections["model"].update(model_cls.fields_from_data(data.num_classes, train_images))
    return RunConfig(
        model=model,
        model_config=from_dict(model_cls.config_class, sections["model"], "model"),
        data=data_options,
        train=from_dict(TrainConfig, sections["train"], "train options"),
    )


def data_config(options: dict[str, Any], table: dict):
    """The DataConfig of the checked options (the data must load before the model is built)."""
    from vaelab.config import from_dict
    from vaelab.run import DataConfig

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


def governor(args: argparse.Namespace, dist=None, config=None):
    """What sets torch's threads for this command (training/threads.py): --threads or
    VAELAB_THREADS fixed, else from the machine's load, again while training; a deterministic
    run keeps the CPUs it may use (its bits do not depend on the load); None under torchrun."""
    from vaelab.training.threads import ThreadGovernor, allowed_cpus, requested_threads

    if dist is not None and dist.world_size > 1:
        return None
    requested = requested_threads(args.threads)
    if requested is None and config is not None and config.train.deterministic:
        requested = allowed_cpus()
    return ThreadGovernor(requested)


def train_or_resume(args: argparse.Namespace, dist) -> int:
    """A new run, or --resume (also what a torchrun restart does); rank 0 writes the report."""
    from vaelab.run import CONFIG_FILE, read_config
    from vaelab.training import distributed
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
                         quiet=args.quiet, time_budget=options.get("time-budget"),
                         threads=governor(args, dist, config))  # fmt: skip
    else:
        with dist.main_first("loading the data"):  # a download happens once per node
            data = data_config(options, table).load()
        config = build_run_config(args.model, options, table, data)
        trainer = train(config, args.out, max_steps=args.max_steps, quiet=args.quiet, data=data,
                        threads=governor(args, dist, config))  # fmt: skip
    if not args.no_report and dist.is_main:
        report = write_run_report(trainer.run_dir, trainer=trainer)
        _say(args, f"report: {report}")
    _say(args, f"run: {trainer.run_dir} (epoch {trainer.state.epoch}, step {trainer.state.step})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from vaelab.run import load_run
    from vaelab.samplers import check_sampler, decode_codes, describe_sampler, draw_codes
    from vaelab.viz.figures import image_grid, save_figure

    if args.n < 1:
        raise VaelabError(f"--n is {args.n}: expected a positive number of samples")
    check_sampler(args.sampler, args.components)
    config, model = load_run(args.run)
    labels = sample_labels(model, args.n, args.label, config.model)
    generator = torch.Generator().manual_seed(args.seed)
    z = draw_codes(args.run, model, args.n, args.sampler, args.components, generator)
    nrow = max(1, round(args.n**0.5))
    path = save_figure(image_grid(decode_codes(model, z, labels), nrow=nrow), args.out)
    _say(args, f"wrote {args.n} samples from {describe_sampler(args.sampler, args.components)} "
         f"to {path}")  # fmt: skip
    return 0


def sample_labels(model, n: int, label: int | None, model_name: str):
    """The labels a conditional model decodes under: --label, or every class in turn."""
    import torch

    classes = model.label_classes
    if label is None:
        return torch.arange(n) % classes if classes else None
    if not classes:
        raise VaelabError(f"--label needs a conditional model (cvae); this run is a {model_name}")
    if not 0 <= label < classes:
        raise VaelabError(f"--label is {label}: expected a class from 0 to {classes - 1}")
    return torch.full((n,), label)


def cmd_eval(args: argparse.Namespace) -> int:
    from vaelab.evaluation.run_eval import evaluate_run
    from vaelab.run import EVAL_FILE, read_config, run_dataset
    from vaelab.viz.run_report import write_run_report

    governor(args).start()  # the evaluation's numbers do not depend on the thread count
    data = run_dataset(args.run, *read_config(args.run), args.strict_data)  # eval and report
    result = evaluate_run(args.run, k=args.k, split=args.split, limit=args.limit, data=data)
    for key, value in result.items():
        if not isinstance(value, list):
            _say(args, f"{key:<28} {value:.4g}" if isinstance(value, float) else
                 f"{key:<28} {value}")  # fmt: skip
    report = write_run_report(Path(args.run), data=data)
    _say(args, f"wrote {Path(args.run) / EVAL_FILE} and {report}")
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from vaelab.tour import run_tour

    if (Path(args.out) / "models").exists():
        raise VaelabError(f"{args.out} already holds a tour: choose another --out or remove it")
    report = run_tour(args.out, quick=args.quick, lang=args.lang, quiet=args.quiet,
                      threads=governor(args))  # fmt: skip
    _say(args, f"open {report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run benchmarks/bench.py of the source checkout this vaelab runs from, with the options."""
    import subprocess

    import vaelab

    script = Path(vaelab.__file__).resolve().parents[2] / "benchmarks" / "bench.py"
    if not script.is_file():
        raise VaelabError(
            f"vaelab bench needs a source checkout: there is no benchmarks/bench.py beside this "
            f"vaelab ({Path(vaelab.__file__).parent}); run it in a clone of the repository "
            "installed with pip install -e ."
        )
    return subprocess.run([sys.executable, str(script), *args.bench_options]).returncode


def cmd_export(args: argparse.Namespace) -> int:
    from vaelab.export import export_run

    for path in export_run(args.run, args.format, args.out, lang=args.lang):
        _say(args, f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaelab.run import read_config, run_dataset
    from vaelab.viz.run_report import write_run_report

    data = run_dataset(args.run, *read_config(args.run), args.strict_data)
    _say(args, f"report: {write_run_report(Path(args.run), data=data)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from vaelab.serve import Explorer, make_app_server, resolve_run, server_url
    from vaelab.serve.server import stop_on_signals

    run_dir, note = resolve_run(args.run)
    if note:
        _say(args, note)
    server = make_app_server(Explorer.from_run(run_dir, args.strict_data), args.host, args.port)
    # "Task queue depth" warnings come with every burst that outnumbers the app threads.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if args.quiet:
        logging.getLogger("waitress").setLevel(logging.ERROR)
    print(f"serving {run_dir} at {server_url(server)} (Ctrl-C stops)", flush=True)
    with stop_on_signals(server):
        server.serve_forever()  # returns after a stop, once the requests in flight are done
    _say(args, "stopped")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from vaelab.data import describe_datasets

    for row in describe_datasets(args.data_dir):
        print(f"{row['name']:<14} {row['description']}\n{'':<14} {row['status']}")
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch's threads (default: the CPUs free of other work, checked again "
                        "while training; also VAELAB_THREADS)")  # fmt: skip


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_strict_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict-data", action="store_true",
                   help="refuse an image folder that changed since the run trained (default: "
                        "a warning that says what changed)")  # fmt: skip


def build_parser(train_options: bool = True) -> argparse.ArgumentParser:
    """The command's parser; without `train_options` the train command's model-dependent
    options are left out (they import torch and every model: what other commands skip)."""
    parser = argparse.ArgumentParser(prog="vaelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model into a run folder")
    if train_options:
        add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="decode samples of a run into a PNG grid")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, help="conditional models: the class to draw")
    p.add_argument("--sampler", default="prior",
                   help="where z comes from: prior (default) or gmm, a Gaussian mixture fitted "
                        "to the training codes (saved beside the run, reused)")  # fmt: skip
    p.add_argument("--components", type=int, help="--sampler gmm: its components (default 10)")
    p.add_argument("--out", default="samples.png", help="PNG file (default samples.png)")
    _add_common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("tour", help="train the lecture's models and write its report")
    p.add_argument("--out", default="runs/tour", help="folder (default runs/tour)")
    p.add_argument("--quick", action="store_true", help="a tiny budget (for tests)")
    p.add_argument("--lang", default="en", help="en (default) or ko")
    _add_threads(p)
    _add_common(p)
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("eval", help="likelihood bounds, diagnostics and probes -> eval.json")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--k", type=int, default=5000, help="importance samples (default 5000)")
    p.add_argument("--split", default="test", help="test (default) or train")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of the split")
    _add_threads(p)
    _add_strict_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_eval)

    # Its options are benchmarks/bench.py's, passed through (`vaelab bench --help` lists them).
    p = sub.add_parser("bench", help="vaelab's trainer vs the standard PyTorch recipe (needs a "
                       "source checkout)", add_help=False)  # fmt: skip
    p.set_defaults(func=cmd_bench, quiet=False, debug=False)

    p = sub.add_parser("serve", help="explore a run's latent space in the browser")
    p.add_argument("run", metavar="RUN", help="a run folder, or a tour folder (serves models/vae)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); the page answers only under "
                        "this name, 127.0.0.1 or localhost")  # fmt: skip
    _add_strict_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="a run as a standalone explorer page, ONNX or safetensors")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", default="html", choices=("html", "onnx", "safetensors"),
                   help="html: the explorer page (default); onnx: encoder.onnx and decoder.onnx; "
                        "safetensors: the weights and a JSON description")  # fmt: skip
    p.add_argument("--out", help="folder to write into (default RUN/export)")
    p.add_argument("--lang", default="en", choices=("en", "ko"), help="the page's language")
    _add_common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="(re)write a run's figures and report.html")
    p.add_argument("run", metavar="RUN")
    _add_strict_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("datasets", help="list the named datasets and where they are")
    p.add_argument("--data-dir", help="a folder to look in first")
    _add_common(p)
    p.set_defaults(func=cmd_datasets)
    return parser


def add_train_options(p: argparse.ArgumentParser) -> None:
    from vaelab.models import MODELS

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
    _add_threads(p)
    for flag, (section, tp) in _option_table().items():
        switch = {"nargs": "?", "const": "true"} if tp is bool else {}  # --flag means true
        if choices(tp):  # listed in the usage line too, as argparse lists `choices`
            switch["metavar"] = "{" + ",".join(map(str, choices(tp))) + "}"
        note = OPTION_HELP.get(flag, "")
        p.add_argument(f"--{flag}", help=f"{section}: {type_name(tp)}{note}", **switch)
    _add_common(p)


# Commands that never touch torch: their start-up imports neither torch nor the models.
LIGHT_COMMANDS = (None, "datasets", "bench")


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if command_of(argv) in LIGHT_COMMANDS:
        return run_command(argv)
    from vaelab.training.runtime import flush_denormals

    # Before torch's first op: torch starts its worker threads at its first parallel op and
    # each copies this thread's mode then (training/runtime.py says why denormals are flushed).
    with flush_denormals():
        return run_command(argv)


def run_command(argv: Sequence[str]) -> int:
    parser = build_parser(train_options=command_of(argv) == "train")
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "bench":  # what parse_args says
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # argparse has printed its message
        return int(exit_.code or 0)
    args.bench_options = extra
    try:
        if args.command != "train" and os.environ.get("WORLD_SIZE", "1") != "1":
            raise VaelabError(f"only vaelab train runs under torchrun: start vaelab "
                              f"{args.command} as one process")  # fmt: skip
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
