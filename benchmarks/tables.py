"""Writes the result tables of README.md and docs/*.md from benchmarks/results/*.json.

    python benchmarks/tables.py           # rewrite every table in place
    python benchmarks/tables.py --check   # exit 1, naming the tables, if one differs

A table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->`: what lies between the
markers is generated from the JSON that the benchmark scripts wrote, what lies outside them is
prose. Every row names its date, machine, seed and command as its JSON records them, and says
"not recorded" where an older file lacks the field (nothing is filled in by guess).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOT_RECORDED = "not recorded"
MARKER = re.compile(r"<!-- table:([\w-]+) -->\n(.*?)<!-- /table:\1 -->\n", re.S)
PROVENANCE = ["date", "machine", "seed", "command"]


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def load(results: Path, name: str) -> dict:
    return json.loads((results / f"{name}.json").read_text())


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    cells = [[UNESCAPED_PIPE.sub(r"\\|", cell) for cell in line] for line in lines]
    return "".join("| " + " | ".join(line) + " |\n" for line in cells)


UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")  # a | inside a cell would end it


# Cells. A missing value (absent or null) reads "not recorded".


def recorded(value, fmt: Callable[..., str] = str) -> str:
    return NOT_RECORDED if value is None or value == "" else fmt(value)


def num(value, digits: int = 2) -> str:
    return recorded(value, lambda v: f"{v:,.{digits}f}")


def spread(stats: dict | None, digits: int = 0) -> str:
    """A {median, min, max} record as `median (min-max)`."""
    if not stats:
        return NOT_RECORDED
    lo, hi = num(stats["min"], digits), num(stats["max"], digits)
    return f"{num(stats['median'], digits)} ({lo}-{hi})"


def percent(value) -> str:
    return recorded(value, lambda v: f"{100 * v:.1f} %")


def processor(name: str | None) -> str:
    """/proc/cpuinfo's model name without its trademark signs."""
    name = (name or "").replace("(R)", "").replace("(TM)", "").replace(" Processor", "")
    return " ".join(name.split())


def machine(meta: dict, row: dict | None = None) -> str:
    """The processor (a row's `cpu` over the file's) and its cores or threads."""
    named = meta.get("machine")  # a record of the machine, or only its processor's name
    info = {**meta, **named} if isinstance(named, dict) else {**meta, "processor": named}
    cpu = processor((row or {}).get("cpu") or info.get("processor"))
    if row is not None and row.get("cpu"):  # a row of its own: the file's threads may not be its
        return cpu
    if info.get("cpu_count") or info.get("cpus"):
        cores = f"{info.get('cpu_count') or info['cpus']} cores"
    else:
        threads = info.get("cpu_threads") or info.get("torch_threads") or info.get("threads")
        cores = recorded(threads, lambda t: f"{t} thread{'s' * (t != 1)}")
    return f"{cpu or 'processor ' + NOT_RECORDED}, {cores}"


def provenance(meta: dict, row: dict | None = None) -> list[str]:
    """Date, machine, seed and command: the row's own, else the file's."""
    row = row or {}
    seed = row.get("seed", meta.get("seed"))
    command = row.get("command") or meta.get("command")
    return [
        recorded(row.get("date") or meta.get("date")),
        machine(meta, row),
        recorded(seed),
        recorded(command, lambda c: f"`{c.strip()}`"),
    ]


# The tables, one function each: results folder -> markdown.


def published(row: dict) -> str:
    return num(row["published_nll"]) if row.get("published_nll") else ""


def fashion_rows(data: dict) -> list[dict]:
    return sorted(data["rows"], key=lambda r: r["model"])


def fashion_protocol(results: Path) -> str:
    data = load(results, "reproduce_fashion")
    header = [
        "model",
        "budget",
        "lr",
        "lr decay",
        "precision",
        "test scored",
        "epochs (best)",
        "test negative ELBO",
        "test NLL",
        "k, test images",
        "estimate s",
        "evaluation s",
        "published",
        *PROVENANCE,
    ]
    rows = []
    for r in fashion_rows(data):
        rows.append(
            [
                r["model"],
                r["budget"],
                f"{r['lr']:g}",
                f"{r['lr_decay']:g}",
                r.get("precision", "fp32"),
                "every epoch" if r.get("test_every", 1) else "after the last epoch",
                f"{r['epochs']} ({r['best_epoch']})",
                num(r["test_neg_elbo"]),
                f"{num(r['test_nll'])} +- {num(r['test_nll_se'])}",
                f"{r['k']}, {r['test_images']:,}",
                num(r.get("is_seconds"), 0),
                num(r.get("eval_seconds"), 0),
                published(r),
                *provenance(data, r),
            ]
        )
    return markdown(header, rows)


def headline_fashion(results: Path) -> str:
    """The lowest test NLL of each model, beside its published row."""
    data = load(results, "reproduce_fashion")
    best: dict[str, dict] = {}
    for r in fashion_rows(data):
        if r["model"] not in best or r["test_nll"] < best[r["model"]]["test_nll"]:
            best[r["model"]] = r
    header = [
        "model (gated 300-300, z=40)",
        "budget",
        "test NLL (nats)",
        "published",
        "date",
        "machine",
    ]
    rows = [
        [
            r["model"],
            r["budget"],
            f"{num(r['test_nll'])} +- {num(r['test_nll_se'])}",
            published(r),
            *provenance(data, r)[:2],
        ]
        for r in best.values()
    ]
    return markdown(header, rows)


def family_other(r: dict) -> str:
    if "cond_sample_acc" in r:
        return (
            f"conditional samples read as their label {percent(r['cond_sample_acc'])}; "
            f"label transfer {percent(r['label_transfer_acc'])}"
        )
    if "disc_acc" in r:
        last = r.get("disc_acc_last5") or []
        window = f" (last 5 epochs {100 * min(last):.0f}-{100 * max(last):.0f} %)" if last else ""
        return f"discriminator accuracy {percent(r['disc_acc'])}{window}"
    return ""


def model_family(results: Path) -> str:
    """benchmarks/model_family.py's first run: seven families, 50 epochs, 2-D and 20-D codes."""
    return model_family_table(results, ["model_family"])


def model_family_every(results: Path) -> str:
    """benchmarks/model_family.py over every registered model, one file per dataset."""
    return model_family_table(results, MODEL_FAMILY_EVERY)


MODEL_FAMILY_EVERY = ["model_family_every"]


def model_family_table(results: Path, files: list[str]) -> str:
    header = ["model", "dataset", "latent", "epochs", "hidden",
              "reconstruction -log p(x\\|z=mean)", "negative ELBO", "negative L_k (k)",
              "active units", "other", *SAMPLE_QUALITY, "train s", *PROVENANCE]  # fmt: skip
    rows = []
    for name in files:
        data = load(results, name)
        k, dataset = data.get("k_eval"), recorded(data.get("dataset"))
        for r in data["rows"]:
            bound = f"{num(r[f'neg_iwae_{k}'])} ({k})" if f"neg_iwae_{k}" in r else ""
            rows.append([r["model"], dataset, str(r["latent"]), str(r["epochs"]),
                         "-".join(str(h) for h in r["hidden"]), num(r["recon"]),
                         num(r["neg_elbo"]) if "neg_elbo" in r else "", bound,
                         recorded(r.get("active_units")), family_other(r), *quality_cells(r),
                         num(r.get("train_seconds"), 1), *provenance(data, r)])  # fmt: skip
        for skip in data.get("skipped", []):
            rows.append([skip["model"], dataset, str(skip["latent"]), "", "", "skipped:",
                         skip["reason"], *[""] * 7, *provenance(data)])  # fmt: skip
        floor = ["real test vs training images (the floor)", dataset, *[""] * 8]
        rows.append([*floor, *quality_cells(data.get("sample_quality_floor") or {}), "",
                     *provenance(data)])  # fmt: skip
    return markdown(header, rows)


# Sample quality in the reference classifier's features (vaelab.evaluation.samples).
SAMPLE_QUALITY = ["FCD", "precision", "recall"]


def quality_cells(r: dict) -> list[str]:
    return [num(r.get("frechet_distance"), 1), num(r.get("precision")), num(r.get("recall"))]


def posthoc_sampler(results: Path) -> str:
    data = load(results, "posthoc_sampler")
    settings = data.get("settings", {})
    header = ["model", "sampler", *SAMPLE_QUALITY, "fit s", "epochs", *PROVENANCE]
    rows = [
        [r["model"], r["sampler"], *quality_cells(r),
         num(r["fit_seconds"], 1) if "fit_seconds" in r else "",
         str(settings.get("epochs", NOT_RECORDED)), *provenance(data)]
        for r in data["rows"]
    ]  # fmt: skip
    rows.append(["real test vs training images", "(the floor)", *quality_cells(data["floor"]),
                 "", "", *provenance(data)])  # fmt: skip
    return markdown(header, rows)


def reproduce_iwae(results: Path) -> str:
    header = [
        "dataset",
        "model",
        "epochs",
        "train s",
        "negative ELBO",
        "NLL",
        "k",
        "evaluation s",
        "published",
        "comparability",
        *PROVENANCE,
    ]
    rows = []
    for name in ("reproduce_iwae_mnist_sample", "reproduce_iwae_fashion"):
        data = load(results, name)
        meta = {**data, **data.get("meta", {})}
        for r in data["rows"]:
            published = f"{r['published']:.2f} ({r['source']})" if r.get("published") else ""
            rows.append(
                [
                    r["dataset"],
                    r["model"],
                    str(r["epochs"]),
                    num(r["train_seconds"], 1),
                    num(r["neg_elbo"]),
                    f"{num(r['nll'])} +- {num(r['nll_se'])}",
                    recorded(meta.get("k")),
                    num(r["eval_seconds"], 0),
                    published,
                    r["comparability"],
                    *provenance(meta, r),
                ]
            )
    return markdown(header, rows)


def iwae_variants_meta(data: dict) -> dict:
    """benchmarks/iwae_variants.py's provenance in the fields `provenance` reads."""
    return {"date": data.get("date"), "processor": data.get("machine"),
            "threads": data.get("settings", {}).get("threads"),
            "seed": data.get("seeds", {}).get("train"), "command": data.get("command")}  # fmt: skip


def iwae_variants(results: Path) -> str:
    data = load(results, "iwae_variants")
    meta, s = iwae_variants_meta(data), data["settings"]
    header = ["model", "epochs", "train s", "negative ELBO", "NLL", "NLL - IWAE-64's (paired)",
              "k", "test images", *PROVENANCE]  # fmt: skip
    rows = [
        [r["model"], str(s["epochs"]), num(r["train_seconds"], 1), num(r["test_neg_elbo"]),
         f"{num(r['test_nll'])} +- {num(r['test_nll_se'])}",
         f"{num(r['nll_minus_IWAE-64'])} +- {num(r['nll_minus_IWAE-64_se'])}",
         str(s["k_eval"]), str(s["eval_images"]), *provenance(meta)]
        for r in data["rows"]
    ]  # fmt: skip
    return markdown(header, rows)


def iwae_snr(results: Path) -> str:
    data = load(results, "iwae_variants")
    header = ["K", "encoder SNR median (quartiles)", "decoder SNR median (quartiles)",
              "estimates", *PROVENANCE]  # fmt: skip
    snr, reps = data["snr"], data["settings"]["snr_reps"]

    def cell(stats: dict) -> str:
        return f"{num(stats['median'], 3)} ({num(stats['q25'], 3)}-{num(stats['q75'], 3)})"

    rows = [[k, cell(snr["encoder"][k]), cell(snr["decoder"][k]), str(reps),
             *provenance(iwae_variants_meta(data))]
            for k in sorted(snr["encoder"], key=int)]  # fmt: skip
    return markdown(header, rows)


BENCH_FILES = ("bench-mlp-vae", "bench-mlp-vae-xeon")


def bench(results: Path) -> str:
    header = [
        "machine",
        "pairs x epochs",
        "recipe images/s",
        "vaelab images/s",
        "ratio per pair",
        "test loss (recipe, vaelab)",
        "peak MB (recipe, vaelab)",
        "matmul GFLOP/s",
        "ceiling images/s",
        "vaelab's fraction",
        "matmuls + Adam alone, images/s",
        "date",
        "seed",
        "command",
    ]
    rows = []
    for name in BENCH_FILES:
        d = load(results, name)
        date, where, seed, command = provenance(d)
        loss = f"{num(d['recipe_test_loss']['median'])}, {num(d['vaelab_test_loss']['median'])}"
        rows.append(
            [
                where,
                f"{d['pairs']} x {d['epochs_per_run']}",
                spread(d["recipe_images_per_s"]),
                spread(d["vaelab_images_per_s"]),
                spread(d["ratio"], 2),
                loss,
                f"{num(d['recipe_peak_mb'], 0)}, {num(d['vaelab_peak_mb'], 0)}",
                num(d["matmul_gflops"], 0),
                num(d["ceiling_images_per_s"], 0),
                percent(d["fraction_of_ceiling"]),
                num(d.get("matmul_and_adam_images_per_s"), 0),
                date,
                seed,
                command,
            ]
        )
    return markdown(header, rows)


def headline_speed(results: Path) -> str:
    header = ["machine", "vaelab images/s", "PyTorch example images/s", "ratio per pair", "date"]
    rows = []
    for name in BENCH_FILES:
        d = load(results, name)
        rows.append(
            [
                machine(d),
                spread(d["vaelab_images_per_s"]),
                spread(d["recipe_images_per_s"]),
                spread(d["ratio"], 2),
                provenance(d)[0],
            ]
        )
    return markdown(header, rows)


def speed_models(results: Path) -> str:
    header = [
        "machine",
        "row",
        "unit",
        "baseline",
        "vaelab",
        "ratio per pair",
        "evaluation: samples/s, matmul GFLOP/s, ceiling s",
        "date",
        "seed",
        "command",
    ]
    rows = []
    for name in ("speed_models", "speed_models-xeon"):
        d = load(results, name)
        date, where, seed, command = provenance(d)
        for r in d["rows"]:
            base, mine = (
                ("recipe_loop", "vaelab") if "recipe_loop" in r else ("plain_loop_s", "vaelab_s")
            )
            digits = 0 if base == "recipe_loop" else 1
            extra = ""
            if "samples_per_s" in r:
                extra = (
                    f"{num(r['samples_per_s'], 0)}, {num(r['matmul_gflops'], 0)}, "
                    f"{num(r['ceiling_s'], 1)}"
                )
            rows.append(
                [
                    where,
                    r["row"],
                    r["unit"],
                    spread(r[base], digits),
                    spread(r[mine], digits),
                    spread(r["ratio"], 2),
                    extra,
                    date,
                    seed,
                    command,
                ]
            )
    return markdown(header, rows)


def precision(results: Path) -> str:
    d = load(results, "precision")
    date, where, seed, command = provenance(d)
    valid = {side: {r[side]["valid_neg_elbo"] for r in d["rows"]} for side in ("fp32", "bf16")}
    header = [
        "machine",
        "model",
        "pairs x epochs",
        "threads",
        "fp32 images/s",
        "bf16 images/s",
        "ratio per pair",
        "validation negative ELBO (fp32, bf16)",
        "date",
        "seed",
        "command",
    ]
    row = [
        where,
        d["model"],
        f"{d['repeats']} x {d['epochs_per_run']}",
        str(d["threads"]),
        spread(d["fp32_images_per_s"]),
        spread(d["bf16_images_per_s"]),
        spread(d["ratio"], 2),
        ", ".join("/".join(num(v) for v in sorted(valid[s])) for s in ("fp32", "bf16")),
        date,
        seed,
        command,
    ]
    return markdown(header, [row])


def distributed(results: Path) -> str:
    d = load(results, "distributed")
    date, where, seed, command = provenance(d)
    header = [
        "machine",
        "model",
        "data",
        "pairs x epochs",
        "1 process x 2 threads, images/s",
        "torchrun 2 x 1 thread, images/s",
        "ratio per pair",
        "date",
        "seed",
        "command",
    ]
    row = [
        where,
        d["model"],
        d["dataset"],
        f"{d['repeats']} x {d['epochs_per_run']}",
        spread(d["one_process_2_threads_images_per_s"]),
        spread(d["torchrun_2x1_images_per_s"]),
        spread(d["ratio"], 2),
        date,
        seed,
        command,
    ]
    return markdown(header, [row])


SERVE_ENDPOINTS = ("decode", "encode", "interpolate", "page", "info", "points")


def serve_load(results: Path) -> str:
    """benchmarks/serve_load.py: each server under the same load, one row each."""
    d = load(results, "serve_load")
    date, where, seed, command = provenance(d)
    s = d["settings"]
    header = [
        "server",
        "clients x seconds",
        "requests",
        "requests/s",
        "errors",
        *[f"{name} p50 / p99 ms" for name in SERVE_ENDPOINTS],
        "RSS MB before, after",
        "exit code after SIGTERM",
        "date",
        "machine",
        "seed",
        "command",
    ]
    rows = []
    for server, r in d["servers"].items():
        latency = [
            f"{num(r['endpoints'][e]['p50_ms'], 1)} / {num(r['endpoints'][e]['p99_ms'], 1)}"
            for e in SERVE_ENDPOINTS
        ]
        rows.append(
            [
                server,
                f"{s['clients']} x {s['seconds']:g}",
                f"{r['requests']:,}",
                num(r["requests_per_s"], 0),
                str(r["errors"]),
                *latency,
                f"{num(r['rss_mb_before'], 0)}, {num(r['rss_mb_after'], 0)}",
                str(r["exit_code_after_sigterm"]),
                date,
                where,
                seed,
                command,
            ]
        )
    return markdown(header, rows)


def startup(results: Path) -> str:
    """benchmarks/startup.py: each command's median wall time, the interpreter's beside it."""
    d = load(results, "startup")
    date, where, seed, command = provenance(d)
    header = ["command", "median wall s", "rounds", "load average", "date", "machine", "command"]
    rounds = str(len(d["rounds"]))
    rows = [
        [f"`{name}`", num(seconds, 3), rounds, num(d["load_average"]), date, where, command]
        for name, seconds in d["median_seconds"].items()
    ]
    return markdown(header, rows)


def contention(results: Path) -> str:
    """benchmarks/contention.py: each process's share of its solo speed, and the pair's sum."""
    d = load(results, "contention")
    date, where, seed, command = provenance(d)
    two, beside = d["two_vaelab"], d["vaelab_beside_plain"]
    header = ["setting", "images/s alone", "shares (median)", "pair's total", "rounds", "date",
              "machine", "seed", "command"]  # fmt: skip
    rounds = str(len(d["rounds"]))
    both = f"{num(d['vaelab_alone_images_per_s'], 0)} / {num(d['plain_alone_images_per_s'], 0)}"
    rows = [
        ["two `vaelab train` runs", num(d["vaelab_alone_images_per_s"], 0),
         f"slower {num(two['median_lowest'])}x", f"{num(two['median_total'])}x", rounds,
         date, where, seed, command],
        ["`vaelab train` beside a plain PyTorch loop", both,
         f"vaelab {num(beside['median_vaelab'])}x, loop {num(beside['median_plain'])}x",
         f"{num(beside['median_total'])}x", rounds, date, where, seed, command],
    ]  # fmt: skip
    return markdown(header, rows)


def disentanglement(results: Path) -> str:
    """benchmarks/disentanglement.py: MIG and DCI of each model on shapes, one row per seed."""
    d = load(results, "disentanglement")
    date, where, _, command = provenance(d)
    s = d["settings"]
    budget = f"{s['steps']} steps x {s['batch_size']}"
    header = ["model", "seed", "budget", "MIG", "DCI disentanglement", "DCI completeness",
              "DCI informativeness", "train s", "date", "machine", "command"]  # fmt: skip
    rows = [
        [r["model"], str(r["seed"]), budget, num(r["mig"], 3), num(r["dci_disentanglement"], 3),
         num(r["dci_completeness"], 3), num(r["dci_informativeness"], 3),
         num(r["train_seconds"], 0), date, where, command]
        for r in d["rows"]
    ]  # fmt: skip
    return markdown(header, rows)


def public_api(results: Path) -> str:
    """benchmarks/public_api.py: each removal's images/s over the old path's, round by round."""
    d = load(results, "public_api")
    date, where, seed, command = provenance(d)
    header = ["variant", "LeanAdam", "mallopt", "images/s", "over the old path", "rounds",
              "date", "machine", "command"]  # fmt: skip
    rounds = str(len(d["rows"]))
    rows = []
    for name, v in d["variants"].items():
        ratio = "1 (the baseline)" if name == "old" else spread(d["ratio"][f"{name}/old"], 3)
        flags = ["yes" if v[trick] else "no" for trick in ("lean_adam", "mallopt")]
        images = spread(d["images_per_s"][name])
        rows.append([name, *flags, images, ratio, rounds, date, where, command])
    return markdown(header, rows)


def bench_revisions(results: Path) -> str:
    """benchmarks/bench_revisions.py: `vaelab bench`'s ratio at two revisions, interleaved."""
    d = load(results, "bench_revisions")
    date, where, seed, command = provenance(d)
    header = ["revision", "commit", "bench ratio per round", "vaelab images/s", "recipe images/s",
              "date", "machine", "command"]  # fmt: skip
    rows = []
    for side in ("before", "after"):
        rev, runs = d["revisions"][side], d["runs"][side]
        ratios = ", ".join(num(r["ratio"]["median"]) for r in runs)
        own = ", ".join(num(r["vaelab_images_per_s"]["median"], 0) for r in runs)
        recipe = ", ".join(num(r["recipe_images_per_s"]["median"], 0) for r in runs)
        rows.append([f"{side}: `{rev['name']}`", rev["commit"][:10], ratios, own, recipe, date,
                     where, command])  # fmt: skip
    change = d["after_over_before"]
    per_round = ", ".join(num(v, 3) for v in change["per_round"])
    rows.append(["after / before", "", f"{per_round} (median {num(change['median'], 3)})", "",
                 "", date, where, command])  # fmt: skip
    return markdown(header, rows)


def soak(results: Path) -> str:
    """benchmarks/soak.py: where each SIGKILL of the long soak landed."""
    d = load(results, "soak")
    date, where, seed, command = provenance(d)
    header = ["#", "phase killed", "where", "date", "machine", "seed", "command"]
    rows = []
    for i, p in enumerate(d["points"], 1):
        if not p["reached"]:
            place = "no event left to kill"
        elif p["command"] == "train":
            place = f"epoch {p['epoch']}, event {p['event']} of the process"
        else:
            place = f"event {p['event']} of `vaelab {p['command']}`"
        rows.append([str(i), p["phase"], place, date, where, seed, command])
    reached = sum(p["reached"] for p in d["points"])
    load_average = num(d["load_average"])  # the soak records only a run whose weights matched
    summary = f"weights identical to the uninterrupted run's; {num(d['seconds'], 0)} s at load "
    summary += f"average {load_average}"
    rows.append(["all", f"{reached} of {d['kills']} reached", summary, date, where, seed, command])
    return markdown(header, rows)


def aae_match(results: Path) -> str:
    """benchmarks/aae_match.py: the tour's AAE codes against its prior, one row per setting."""
    d = load(results, "aae_match")
    date, where, seed, command = provenance(d)
    header = ["setting", "epochs", "MMD^2 by label (floor: median, 95 %)",
              "MMD^2 marginal (floor: median, 95 %)", "codes in their own component",
              "radial offset mean, std (prior 0, 1)", "tangential std (prior 0.5)", "train s",
              "date", "machine", "seed", "command"]  # fmt: skip

    def mmd(r: dict, name: str) -> str:
        floor = f"{r[f'mmd2_{name}_floor']:.1e}, {r[f'mmd2_{name}_floor_q95']:.1e}"
        return f"{r[f'mmd2_{name}']:.1e} ({floor})"

    rows = [[r["changes"], str(r["epochs"]), mmd(r, "by_label"), mmd(r, "marginal"),
             percent(r["own_component"]), f"{num(r['radial_mean'])}, {num(r['radial_std'])}",
             num(r["tangential_std"]), num(r["train_seconds"], 0), date, where, seed, command]
            for r in d["rows"]]  # fmt: skip
    return markdown(header, rows)


TABLES: dict[str, Callable[[Path], str]] = {
    "headline-fashion": headline_fashion,
    "headline-speed": headline_speed,
    "fashion-protocol": fashion_protocol,
    "model-family": model_family,
    "model-family-every": model_family_every,
    "posthoc-sampler": posthoc_sampler,
    "reproduce-iwae": reproduce_iwae,
    "iwae-variants": iwae_variants,
    "iwae-snr": iwae_snr,
    "bench": bench,
    "speed-models": speed_models,
    "precision": precision,
    "distributed": distributed,
    "serve-load": serve_load,
    "startup": startup,
    "contention": contention,
    "disentanglement": disentanglement,
    "public-api": public_api,
    "bench-revisions": bench_revisions,
    "soak": soak,
    "aae-match": aae_match,
}


class TableError(ValueError):
    pass


def rewrite(text: str, results: Path = RESULTS, where: str = "document") -> tuple[str, list]:
    """The document with every marked table generated again, and the names it holds."""
    names = []

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise TableError(f"{where}: unknown table {name!r} (tables: {', '.join(TABLES)})")
        names.append(name)
        return f"<!-- table:{name} -->\n{TABLES[name](results)}<!-- /table:{name} -->\n"

    return MARKER.sub(fill, text), names


def render(paths: list[Path], results: Path = RESULTS) -> dict[Path, str]:
    """Each document as the JSON makes it; every table must appear exactly once in all."""
    out, seen = {}, []
    for path in paths:
        out[path], names = rewrite(path.read_text(), results, where=str(path))
        seen += names
    counts = {name: seen.count(name) for name in TABLES}
    wrong = [f"{name!r} appears {n} times" for name, n in counts.items() if n != 1]
    if wrong:
        raise TableError(f"each table must appear once: {', '.join(wrong)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        fresh = render(documents(), args.results)
    except TableError as err:
        print(f"tables.py: {err}", file=sys.stderr)
        return 2
    stale = [path for path, text in fresh.items() if path.read_text() != text]
    for path in stale:
        if args.check:
            print(f"{path.relative_to(ROOT)}: a table differs from {args.results}", file=sys.stderr)
        else:
            path.write_text(fresh[path])
            print(f"rewrote {path.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
