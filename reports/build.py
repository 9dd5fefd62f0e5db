"""Regenerate the committed reports in one command (``make reports`` runs it).

    python reports/build.py [--datasets scientific ml100k] [--notebooks 01_tokens 02_train ...] [--html-only]

For every dataset and notebook: execute it in full mode with papermill (:func:`motor.report.execute`) into
``reports/<dataset>/<notebook>.ipynb``, write its HTML page next to it (plotly.js and the style sheet shared in
``reports/assets/``), then screenshot every page offline into ``reports/figures/`` (``screenshots.py``, needs a
Chromium) and rewrite the generated blocks of ``reports/README.md`` (``update_readme.py``). Runs are read from the
committed registry ``reports/runs/`` (``$MOTOR_RUNS`` if set) and trained there when missing. ``--html-only``
re-exports the pages and screenshots from the executed notebooks without running them.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASETS = ("scientific", "ml100k")
# parameters beyond dataset and fast=False, per notebook (every dataset) and per (dataset, notebook)
PARAMETERS = {"03_compare": {"train_missing": False}}  # 03 tabulates the registry; it trains nothing
PER_DATASET = {
    ("ml100k", "05_ablation"): {"seeds": [0]},  # one seed: ml100k's ablation runs are slow
    ("ml100k", "04_popularity_cold_start"): {"item_reprs": ["id", "ms"]},  # the hybrids on scientific only (CPU)
    ("scientific", "04_popularity_cold_start"): {"item_reprs": ["id", "ms", "ms+id", "ms+gate"]},
    # ml100k is dense (106 interactions per user): thinned further
    ("ml100k", "08_sparsity"): {"backbones": ["lightgcn", "bpr", "vbpr", "freedom"], "keeps": [1.0, 0.2, 0.1, 0.05]},
    # the paper's protocol (motor.tune: MMRec grid x D, ASHA, selection on valid) for the backbones searched so far
    ("scientific", "03_compare"): {"protocol": "tuned", "tuned_backbones": ["bpr", "lightgcn", "vbpr", "freedom"]},
}


def parameters(dataset: str, notebook: str) -> dict:
    return {"dataset": dataset, "fast": False, **PARAMETERS.get(notebook, {}),
            **PER_DATASET.get((dataset, notebook), {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--notebooks", nargs="+", default=None, help="names without .ipynb (default: all)")
    ap.add_argument("--html-only", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from motor.report import execute, to_html

    if "MOTOR_RUNS" not in os.environ:
        os.environ["MOTOR_RUNS"] = str(HERE / "runs")
        print(f"run registry: {os.environ['MOTOR_RUNS']} (the committed one)")
    names = args.notebooks or sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb"))
    for dataset in args.datasets:
        for name in names:
            out = HERE / dataset / f"{name}.ipynb"
            if not args.html_only:
                t0 = time.perf_counter()
                out.parent.mkdir(parents=True, exist_ok=True)
                execute(ROOT / "notebooks" / f"{name}.ipynb", out, parameters(dataset, name), cwd=ROOT / "notebooks")
                print(f"{out}: executed in {time.perf_counter() - t0:.0f} s", flush=True)
            print(to_html(out, assets=HERE / "assets"), flush=True)
    subprocess.run([sys.executable, str(HERE / "screenshots.py")], check=True)
    subprocess.run([sys.executable, str(HERE / "update_readme.py")], check=True)


if __name__ == "__main__":
    main()
