"""Rewrite the generated blocks of reports/README.md: between the ``registry`` markers the headline table (test
Recall@20 / NDCG@20, mean ± std over seeds, from ``motor.runs.load()``) and the cells with fewer than three seeds
or not run; between the ``findings`` markers the sentences each executed notebook computed from its results (the
output of its ``findings.describe_*`` cells), and the screenshot of every page. Run
after the reports are regenerated: ``python reports/update_readme.py`` (``reports/build.py`` does).
"""
import json
import re
from pathlib import Path

from motor import runs
from motor.analysis import main_runs, metric_frame, results_markdown
from motor.backbones import REGISTRY
from motor.cache import atomic_write_text
from motor.item_repr import headline_item_reprs

START, END = "<!-- registry:start -->", "<!-- registry:end -->"
FINDINGS = "<!-- findings:start -->", "<!-- findings:end -->"
HERE = Path(__file__).parent
SEEDS = 3


def registry_block(datasets=("ml100k", "scientific")) -> str:
    df = main_runs(runs.load())
    df = df[df.dataset.isin(datasets) & df.item_repr.isin(headline_item_reprs())]  # ablations: notebook 05
    frame = metric_frame(df)
    counts = frame.groupby(["dataset", "backbone", "item_repr"])["seed"].nunique()
    counts = counts.groupby(level=[0, 1]).min()  # the least-run cell of each (dataset, backbone)
    short = [f"{d}/{b} ({n} seed{'s' * (n > 1)})" for (d, b), n in counts.items() if n < SEEDS]
    cells = frame.groupby(["dataset", "backbone"])["item_repr"].unique()
    missing = [f"{d}/{b}" for d in datasets for b in REGISTRY if (d, b) not in counts.index]
    missing += [f"{d}/{b}/{r}" for (d, b), have in cells.items() for r in headline_item_reprs() if r not in have]
    notes = []
    if short:
        notes.append(f"Fewer than {SEEDS} seeds: " + ", ".join(short) + ".")
    if missing:
        notes.append("Not run: " + ", ".join(missing) + ".")
    tail = " ".join(notes) if notes else f"Every backbone has {SEEDS} seeds on every dataset."
    return "\n".join([START, "", results_markdown(df), "", tail, "", END])


def notebook_findings(notebook: Path) -> list[str]:
    """The markdown outputs of the notebook's ``findings.describe_*`` (before issue 25: ``studies.`` / ``analysis.``)
    cells (what its results say, in numbers)."""
    out = []
    for cell in json.loads(notebook.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and re.search(r"\b(findings|studies|analysis)\.describe_", source):
            out += ["".join(o["data"]["text/markdown"]) for o in cell.get("outputs", [])
                    if "text/markdown" in o.get("data", {})]
    return out


def findings_block(root: Path = HERE, datasets=("scientific", "ml100k")) -> str:
    """Per dataset, one bullet per executed notebook with its computed findings and its page's screenshot."""
    lines = [FINDINGS[0], ""]
    for d in datasets:
        notebooks = sorted((root / d).glob("0*.ipynb"))
        if not notebooks:
            continue
        lines += [f"### {d}", ""]
        for nb in notebooks:
            shot = root / "figures" / f"{d}_{nb.stem}.png"
            link = f" ([screenshot](figures/{shot.name}))" if shot.exists() else ""
            said = " ".join(notebook_findings(nb)) or "(no computed findings in this executed notebook)"
            lines.append(f"- **{nb.stem}**{link}: {said}")
        lines.append("")
    return "\n".join(lines + [FINDINGS[1]])


def replace_block(text: str, markers: tuple[str, str], block: str, path: Path) -> str:
    start, end = markers
    if start not in text or end not in text:
        raise SystemExit(f"{path}: markers {start} / {end} not found; put them around the block to regenerate")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + block + tail


def main(path: Path = HERE / "README.md") -> None:
    text = replace_block(path.read_text(), (START, END), registry_block(), path)
    atomic_write_text(path, replace_block(text, FINDINGS, findings_block(path.parent), path))


if __name__ == "__main__":
    main()
