"""Command line: ``python -m motor train ...`` (one run), ``compare`` (a grid), ``runs`` (registry table), ``info``,
``dataset`` (which dataset a run would use), ``summary`` (the runs an executed notebook made).

Errors a user can fix (a missing dataset, a bad value) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import MISSING, Field, fields
from pathlib import Path

from . import runs
from .analysis import compare_table, main_runs, mean_std_pivot, results_markdown
from .backbones import REGISTRY
from .cache import atomic_write_text
from .config import RunConfig
from .data import SPLIT_SCHEMES, DataError, resolve_dataset_name
from .defaults import EPOCHS, PATIENCE
from .experiment import from_registry, get_dataset, run, run_grid
from .item_repr import headline_item_reprs
from .params import ParameterError
from .tune import TuneError, check_metric, tune, tune_seeds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="motor", description="MOTOR workbench")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and evaluate one configuration; saved in the run registry")
    add_config_options(t)
    t.add_argument("--reuse", action="store_true", help="return the saved run if this config already ran")
    t.add_argument("--json", action="store_true", help="print the result as JSON (progress lines go to stderr)")
    c = sub.add_parser("compare", help="run (or reuse) a grid and print test mean ± std and improvement over id")
    c.add_argument("--datasets", nargs="+", default=[None], help="default: scientific when present, else synthetic")
    c.add_argument("--backbones", nargs="+", default=None, help="default: all registered backbones")
    c.add_argument("--item-reprs", nargs="+", default=None, help="default: the headline ones (id ms ma)")
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    c.add_argument("--epochs", type=int, default=EPOCHS)
    c.add_argument("--device", default="cpu")
    c.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    r = sub.add_parser("runs", help="mean ± std table of the saved runs (one cell per configuration)")
    r.add_argument("--metric", default="recall@20")
    r.add_argument("--registry", default=None, help="registry folder (default: $MOTOR_RUNS, else runs/); the "
                                                    "committed results are in reports/runs")
    r.add_argument("--variant", default="", help="show the runs of this variant (see the list printed below)")
    r.add_argument("--split", default="random", help="show the runs of this split (default random)")
    i = sub.add_parser("info", help="load a dataset and print its summary")
    i.add_argument("dataset")
    d = sub.add_parser("dataset", help="print the dataset a run would use (exit 2 if a named one does not exist)")
    d.add_argument("name", nargs="?", default=None)
    s = sub.add_parser("summary", help="summarise runs: give run ids or executed notebooks (their runs are found "
                                       "in the outputs)")
    s.add_argument("sources", nargs="+")
    s.add_argument("--json", action="store_true")
    _add_tune_parser(sub)
    args = p.parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except (DataError, ParameterError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"motor {args.cmd}: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n_layers\": 2}}', got {text!r}")
    return value


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`~motor.config.RunConfig` field (``split_seed`` -> ``--split-seed``), with the
    field's help text and type; an option not given is not passed on, so RunConfig's default applies, and the
    values are checked by ``RunConfig.validate`` like any other run's."""
    for f in fields(RunConfig):
        text = f.metadata["help"]
        text = text if "default" in text else f"{text} (default: {_default_text(f)})"
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%"), **_option_type(f)}
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def config_options(args: argparse.Namespace) -> dict:
    """The RunConfig fields given on the command line (see :func:`add_config_options`)."""
    out = {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}
    if "modalities" in out:
        out["modalities"] = out["modalities"] or None  # "--modalities" with no names: all
    return out


def _option_type(f: Field) -> dict:
    """argparse settings for a field from its annotation (``float | None`` also takes "none")."""
    if "nargs" in f.metadata:
        return {"nargs": f.metadata["nargs"]}
    kind = {"str": str, "int": int, "float": float, "dict": _json_dict, "list": _json_list}[f.type.split(" | ")[0]]
    return {"type": _or_none(kind) if f.type.endswith("| None") else kind}


def _default_text(f: Field) -> str:
    default = f.default_factory() if f.default is MISSING else f.default
    return json.dumps(default) if isinstance(default, (dict, list)) else str(default)


def _or_none(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its error message
    return parse


def _json_list(text: str) -> list:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a JSON list such as '[0.5, 10]', got {text!r}")
    return value


def _train(args) -> int:
    t0 = time.perf_counter()
    log = sys.stderr if args.json else sys.stdout  # --json keeps stdout for the JSON document
    config = config_options(args)
    config["dataset"] = resolve_dataset_name(config.get("dataset"), file=log)
    bar = sys.stdout.isatty() and sys.stderr.isatty()  # a terminal gets a progress bar, a log one line per epoch
    res = run(**config, reuse=args.reuse, progress=bar, keep_model=False, save_model=True,
              callbacks=() if bar else (epoch_printer(config.get("epochs", EPOCHS), log),))
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**run_summary(res), "wall_seconds": wall, "valid": res.valid, "test": res.test,
                          "params": res.params, "timings": res.timings}, indent=1))
    else:
        print(format_summary(res, wall))
    return 0


def epoch_printer(epochs: int, file=None, metric: str = "recall@20"):
    """A training callback that prints one flushed line per epoch (for logs, where a progress bar is invisible)."""
    best = {"value": float("-inf"), "epoch": -1}

    def callback(epoch: int, record: dict) -> None:
        value = record.get(f"valid_{metric}")
        line = f"epoch {epoch}/{epochs - 1}  loss {record['loss']:.4f}  {record['train_seconds']:.2f} s"
        if value is not None:
            if value > best["value"]:
                best.update(value=value, epoch=epoch)
            line += f"  valid {metric} {value:.4f} (best {best['value']:.4f} at epoch {best['epoch']})"
        print(line, file=file or sys.stdout, flush=True)

    return callback


def run_summary(res) -> dict:
    """The facts a finished run is reported with (dataset used, model, metrics at 20, epochs, seconds)."""
    cfg = res.config
    return {"run_id": res.run_id, "dataset": cfg["dataset"], "backbone": cfg["backbone"],
            "item_repr": cfg["item_repr"], "split": cfg["split"], "seed": cfg["seed"],
            "valid_recall@20": res.valid.get("recall@20"), "valid_ndcg@20": res.valid.get("ndcg@20"),
            "test_recall@20": res.test.get("recall@20"), "test_ndcg@20": res.test.get("ndcg@20"),
            "best_epoch": res.best_epoch, "stopped": res.stopped, "epochs_trained": len(res.history),
            "train_seconds": res.timings.get("train_seconds")}


def format_summary(res, wall_seconds: float | None = None) -> str:
    """A few lines for the terminal: what ran, on which data, how it scored, how long it took."""
    s = run_summary(res)
    size = res.config.get("dataset_summary") or {}
    shape = f" ({size['users']:,} users x {size['items']:,} items)" if {"users", "items"} <= set(size) else ""
    took = f"{s['train_seconds']:.1f} s training" if s["train_seconds"] is not None else "time not recorded"
    if wall_seconds is not None:
        took += f", {wall_seconds:.1f} s in all"
    metrics = res.summary().loc[[m for m in ("recall@20", "ndcg@20", "recall@10", "ndcg@10") if m in res.valid]]
    return "\n".join([
        f"run      {s['run_id']}",
        f"dataset  {s['dataset']}{shape}, split {s['split']}",
        f"model    {s['backbone']} with item representation {s['item_repr']}, seed {s['seed']}",
        f"trained  {s['epochs_trained']} epoch{'' if s['epochs_trained'] == 1 else 's'} ({s['stopped']}, "
        f"best epoch {s['best_epoch']}), {took}",
        metrics.round(4).to_string()])


def _compare(args) -> int:

    configs = [RunConfig(dataset=resolve_dataset_name(name), backbone=bb, item_repr=kind, seed=seed,
                         epochs=args.epochs, device=args.device)
               for name in args.datasets for bb in args.backbones or list(REGISTRY)
               for kind in args.item_reprs or headline_item_reprs() for seed in args.seeds]

    def report(res) -> None:
        print(f"{res.run_id}: test recall@20 {res.test['recall@20']:.4f} (best epoch {res.best_epoch})", flush=True)

    results, _ = run_grid(configs, keep_model=False, save_model=False, progress=False, on_result=report)
    df = runs.load()
    df = df[df.run_id.isin({r.run_id for r in results})]
    for m in ("recall", "ndcg"):
        t = compare_table(df, m, 20)
        print(f"\n== test {m}@20, mean ± std over seeds ==")
        print(mean_std_pivot(t).to_string())
        print(t.pivot_table(index=["dataset", "backbone"], columns="item_repr", values="improvement_%")
              .round(1).to_string())
    if args.markdown:

        atomic_write_text(Path(args.markdown), results_markdown(df) + "\n")
    return 0


def _runs(args) -> int:
    m, _, k = args.metric.partition("@")
    if not (m and k.isdigit()):
        raise ValueError(f"--metric {args.metric!r}: a metric and a cutoff, e.g. recall@20 or ndcg@10.")
    root = Path(args.registry) if args.registry else None
    everything = runs.load(root)  # default: the user's registry, then the committed reference runs it lacks
    df = main_runs(everything, split=args.split, variant=args.variant)
    where = root or (runs.runs_dir() if runs.reference_dir() is None
                      else f"{runs.runs_dir()} or {runs.reference_dir()}")
    if df.empty and everything.empty:
        print(f"no runs saved under {where}"
              + ("" if args.registry else "; the committed results: python -m motor runs --registry reports/runs"))
        return 0
    if df.empty:
        saved = everything.drop_duplicates("run_id")
        splits = ", ".join(f"{s} ({n})" for s, n in saved.split.value_counts().items())
        print(f"none of the {len(saved)} runs saved under {where} is a main-table run of split {args.split!r}"
              + (f" and variant {args.variant!r}" if args.variant else "") + " (all modalities, 4 tokens per "
              f"modality); their splits: {splits}. Fix: --split NAME (and --variant NAME) to tabulate those.")
    else:
        present = everything[(everything.metric == m) & (everything.k == int(k))]
        if present.empty:
            known = sorted({f"{a}@{int(b)}" for a, b in zip(everything.metric, everything.k) if b == b})
            raise ValueError(f"--metric {args.metric!r}: the saved runs under {where} record no such metric; they "
                             f"record {', '.join(known)}.")
        print(compare_table(df, metric=m, k=int(k)).to_string())
    others = everything[~everything.run_id.isin(df.run_id)].drop_duplicates("run_id")
    if len(others) and not df.empty:
        variants = sorted(v for v in others.variant.unique() if v and v != args.variant)
        print(f"\n{len(others)} more runs are not in this table (another split, token count, modality subset or "
              "variant)" + (". Variants (--variant NAME): " + "; ".join(variants) if variants else "."))
    return 0


def _info(args) -> int:

    print(repr(get_dataset(resolve_dataset_name(args.dataset), "given")))
    return 0


def _dataset(args) -> int:

    print(resolve_dataset_name(args.name, file=sys.stderr))  # the fallback line on stderr, the name on stdout
    return 0


RUN_ID = re.compile(r"[\w.@+-]+-D\d+-s\d+-[0-9a-f]{8}")


def run_ids_in_notebook(path: str | Path) -> list[str]:
    """Ids of saved runs that an executed notebook's outputs mention, in order of first mention."""
    import nbformat


    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {'a folder, not' if path.is_dir() else 'no such'} notebook file. Fix: give "
                                "an executed .ipynb file (or run ids).")
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, not UTF-8, not a notebook
        raise ValueError(f"{path}: not a readable Jupyter notebook ({type(exc).__name__}). Fix: give an executed "
                         ".ipynb file (or run ids).") from None
    found: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") or (out.get("data") or {}).get("text/plain", "")
            for rid in RUN_ID.findall(text if isinstance(text, str) else "".join(text)):
                if rid not in found and runs.exists(rid):
                    found.append(rid)
    return found


def _summary(args) -> int:

    ids: list[str] = []
    for src in args.sources:
        if src.endswith(".ipynb"):
            found = run_ids_in_notebook(src)
            if not found:
                raise FileNotFoundError(f"{src}: its outputs name no run saved in the registry "
                                        "(was it executed with the same MOTOR_RUNS?)")
            ids += [r for r in found if r not in ids]
        elif src not in ids:
            ids.append(src)
    results = [from_registry(rid) for rid in ids]
    if args.json:
        print(json.dumps([run_summary(r) for r in results], indent=1))
    else:
        print("\n\n".join(format_summary(r) for r in results))
    return 0


def _add_tune_parser(sub) -> None:
    u = sub.add_parser("tune", help="hyper-parameter search on valid with Ray Tune (every trial a saved run); "
                                    "prints the trials and the selected configuration")
    u.add_argument("--dataset", nargs="+", default=[None], help="default: scientific when present, else synthetic")
    u.add_argument("--backbone", nargs="+", default=["lightgcn"])
    u.add_argument("--item-repr", nargs="+", default=["ms"])
    u.add_argument("--space", type=_space, default=None,
                   help='JSON {name: [values]}, e.g. \'{"n_tokens": [2, 4], "reg_weight": [1e-2, 1e-4]}\', or '
                        '"small"; default: the backbone\'s MMRec grid x n_tokens {2, 4, 8, 16}')
    u.add_argument("--epochs", type=int, default=None, help=f"maximum epochs per trial (default {EPOCHS})")
    u.add_argument("--budget", type=_budget, default="grid", help="grid (every point), asha (every point, bad "
                   "trials stopped early), or a number n of points drawn from the grid")
    u.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds per point (selection on their mean)")
    u.add_argument("--repeat-seeds", nargs="+", type=int, default=None,
                   help="then run the selected configurations with these seeds, e.g. 0 1 2")
    u.add_argument("--split", default="random", choices=SPLIT_SCHEMES)
    u.add_argument("--patience", type=int, default=PATIENCE)
    u.add_argument("--metric", default="recall@20", help="valid metric to select on")
    u.add_argument("--address", default=None, help="a running Ray cluster (default: $RAY_ADDRESS, else local)")
    u.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    u.add_argument("--cpus-per-trial", type=int, default=1)
    u.add_argument("--gpus-per-trial", type=float, default=0, help="e.g. 0.25: four trials share a GPU")
    u.add_argument("--device", default=None, help="default: cuda when --gpus-per-trial > 0, else cpu")
    u.add_argument("--no-reuse", action="store_true", help="retrain trials already in the registry")
    u.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    u.add_argument("--json", action="store_true", help="print trials and selection as JSON")


def _space(text: str):
    return text if text == "small" else _json_dict(text)


def _budget(text: str):
    if text in ("grid", "asha"):
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected grid, asha or a number of points, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"the number of points must be >= 1, got {n}")
    return n


def _tune(args) -> int:
    check_metric(args.metric)  # before the datasets are looked at or Ray starts
    datasets = [resolve_dataset_name(name, file=sys.stderr) for name in args.dataset]
    fixed = {"split": args.split, "patience": args.patience}
    if args.device:
        fixed["device"] = args.device
    launch = {"address": args.address, "num_cpus": args.num_cpus, "cpus_per_trial": args.cpus_per_trial,
              "gpus_per_trial": args.gpus_per_trial, "progress": not args.quiet, "reuse": not args.no_reuse}
    try:
        trials, selected = tune(datasets, args.backbone, args.item_repr, args.space, epochs=args.epochs,
                                seeds=args.seeds, budget=args.budget, metric=args.metric, **launch, **fixed)
    except TuneError as e:  # the search ran and selected nothing: its trials, then why, and a failing status
        if e.trials is not None and len(e.trials):
            cols = [c for c in ["backbone", "item_repr", "hyper_parameters", "seed", "status", "error"]
                    if c in e.trials]
            print(e.trials[cols].to_string(index=False), file=sys.stderr)
        print(f"motor tune: error: {e}", file=sys.stderr)
        return 1
    if args.repeat_seeds:
        selected = tune_seeds(selected, args.repeat_seeds, **launch)
    valid = f"valid_{args.metric}"
    shown = ["dataset", "backbone", "item_repr", "hyper_parameters", "seeds", valid, "test_recall@20",
             "test_ndcg@20", "n_complete", "n_points"]
    if args.json:
        print(json.dumps({"trials": json.loads(trials.to_json(orient="records")),
                          "selected": json.loads(selected[[c for c in shown if c in selected]]
                                                 .assign(run_ids=selected.run_ids).to_json(orient="records"))},
                         indent=1))
        return 0
    cols = [c for c in ["backbone", "item_repr", "hyper_parameters", "seed", "status", valid, "best_epoch"]
            if c in trials]
    print(trials[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n== selected on valid (test read for these only) ==")
    print(selected[[c for c in shown if c in selected]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


COMMANDS = {"train": _train, "compare": _compare, "runs": _runs, "info": _info, "dataset": _dataset,
            "summary": _summary, "tune": _tune}


if __name__ == "__main__":
    sys.exit(main())
