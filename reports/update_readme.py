"""Rewrite the registry-derived block of reports/README.md (between the ``registry`` markers): the headline table
(test Recall@20 / NDCG@20, mean ± std over seeds, from ``motor.runs.load()``) and the list of cells with fewer
than three seeds or not run. Run after new runs land: ``python reports/update_readme.py`` (``make reports`` does).
"""
from pathlib import Path

from motor import runs
from motor.analysis import main_runs, metric_frame, results_markdown
from motor.backbones import REGISTRY
from motor.cache import atomic_write_text
from motor.item_repr import headline_item_reprs

START, END = "<!-- registry:start -->", "<!-- registry:end -->"
SEEDS = 3


def registry_block(datasets=("ml100k", "scientific")) -> str:
    df = main_runs(runs.load())
    df = df[df.dataset.isin(datasets) & df.item_repr.isin(headline_item_reprs())]  # ablations: notebook 05
    counts = metric_frame(df).groupby(["dataset", "backbone", "item_repr"])["seed"].nunique()
    counts = counts.groupby(level=[0, 1]).min()  # the least-run cell of each (dataset, backbone)
    short = [f"{d}/{b} ({n} seed{'s' * (n > 1)})" for (d, b), n in counts.items() if n < SEEDS]
    missing = [f"{d}/{b}" for d in datasets for b in REGISTRY if (d, b) not in counts.index]
    notes = []
    if short:
        notes.append(f"Fewer than {SEEDS} seeds: " + ", ".join(short) + ".")
    if missing:
        notes.append("Not run: " + ", ".join(missing) + ".")
    tail = " ".join(notes) if notes else f"Every backbone has {SEEDS} seeds on every dataset."
    return "\n".join([START, "", results_markdown(df), "", tail, "", END])


def main(path: Path = Path(__file__).with_name("README.md")) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: markers {START} / {END} not found; put them around the block to regenerate")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(path, head + registry_block() + tail)


if __name__ == "__main__":
    main()
