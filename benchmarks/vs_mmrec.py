"""motor against MMRec (github:enoche/MMRec), side by side: same machine, same data, same hyper-parameters.

For every (dataset, model) cell it starts fresh processes in the order MMRec, motor-id, motor-ms, MMRec, ...
(``--repeats`` rounds), each pinned to one thread (OMP/MKL/OPENBLAS and torch), so a slow phase of the machine hits
the three sides alike. Every process trains for ``--epochs`` epochs (the first is a warm-up and excluded) with a full
evaluation of the valid users after each, and reports per epoch its training seconds on the wall clock and on the
process CPU clock, the evaluation seconds, and its peak RSS. The tables give medians over the processes and the
ratios MMRec / motor (ratio of medians; in brackets the range of the per-round ratios of adjacent processes).

    python benchmarks/vs_mmrec.py --mmrec PATH --setup-venv           # once: WORK/venv-mmrec (about 1.4 GB)
    python benchmarks/vs_mmrec.py --mmrec PATH --datasets ml100k --models BPR LightGCN --repeats 3
    python benchmarks/vs_mmrec.py --report WORK/results/<stamp>.jsonl  # the tables of an earlier run

``PATH`` is an MMRec checkout (the folder holding ``src/main.py``) or a bare git mirror of it (``--mmrec-commit``
is extracted from it). It is never modified: a copy in ``WORK/MMRec`` (default ``WORK`` = ``.vs_mmrec/`` in this
checkout, ignored by git) gets the compatibility patches P1-P7 below, which make MMRec e775373 run on CPU with
Python 3.11, torch 2.13, NumPy 2 and SciPy >= 1.13 without changing its maths. MMRec runs in its own venv
(``--mmrec-python``, default ``WORK/venv-mmrec/bin/python``, made by ``--setup-venv`` from
``benchmarks/requirements-mmrec.txt``); motor runs in this interpreter's environment.

Datasets: folders under ``--data-root`` (default ``$MOTOR_DATA``, else ``../shared/data``, else ``data/``) in MMRec's
format (``<name>.inter`` with ``x_label``, ``image_feat.npy``, ``text_feat.npy``); both sides read the file's own
split. ``babysyn`` is generated: motor's synthetic data at Amazon Baby scale (19,445 users, 7,050 items,
160,000 interactions, 4,096-d image and 384-d text features). ``baby5`` is built from the real Amazon Baby 5-core
interactions (``--baby5 DIR`` with ``train.json``, ``val.json``, ``test.json``; e.g. ``data/baby/5-core`` of
github:sunflower82/Neighbor-Layer-Hypergraph-CL-for-MMHCL-ready-for-implementation at a553f39) with random features
of Baby's shapes: speed only.

Features (``--features``, default ``both``): MMRec trains the raw feature matrices of FREEDOM, BM3 and MGCN
(``nn.Embedding.from_pretrained(freeze=False)``), motor freezes them by default. Those three models are compared like
for like, one row per pair: "(trained features)" is motor with ``train_features=True`` against MMRec as it is;
"(frozen features)" is motor's default against a second copy, ``WORK/MMRec-frozen-features``, which also gets patch
P8 (``freeze=False`` -> ``freeze=True`` in those three models, nothing else). Other models have one row.

Clocks: MMRec's own trainer clock (the training time it logs per epoch, which includes its negative sampling) and
the process CPU time of the same interval; motor's trainer ``train_seconds`` and the CPU time of the epoch minus
that of its evaluation. "eval" is one full-ranking pass over the valid users (MMRec also evaluates the test users
every epoch; that second pass is not counted). Hyper-parameters are equalised (``MODELS``), not tuned: the
numbers say nothing about accuracy.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import shutil
import statistics as st
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
MMREC_COMMIT = "e775373b3ab1354a92165b0885ce4ab3dc4d7497"

# model -> (MMRec config overrides (one-element lists for grid keys), motor backbone, its keyword arguments,
# Adam weight decay of both sides). Chosen for equal work per epoch, not for accuracy.
MODELS = {
    "BPR": ({"reg_weight": [1e-4]}, "bpr", {"reg_weight": 1e-4}, 0.0),
    "LightGCN": ({"n_layers": [2], "reg_weight": [1e-4]}, "lightgcn", {"n_layers": 2, "reg_weight": 1e-4}, 0.0),
    "VBPR": ({"reg_weight": [1e-4]}, "vbpr", {"reg_weight": 1e-4}, 0.0),
    "LayerGCN": ({"n_layers": [4], "dropout": [0.1], "reg_weight": [1e-4]}, "layergcn",
                 {"n_layers": 4, "dropout": 0.1, "reg_weight": 1e-4}, 0.0),
    "BM3": ({"n_layers": [1], "dropout": [0.5], "reg_weight": [0.1], "cl_weight": 2.0}, "bm3",
            {"n_layers": 1, "dropout": 0.5, "reg_weight": 0.1, "cl_weight": 2.0}, 0.0),
    "FREEDOM": ({"dropout": [0.8], "reg_weight": [1e-4], "knn_k": 10, "mm_image_weight": 0.1, "n_mm_layers": 1,
                 "n_ui_layers": 2}, "freedom",
                {"knn_k": 10, "mm_image_weight": 0.1, "n_mm_layers": 1, "n_ui_layers": 2, "dropout": 0.8,
                 "reg_weight": 1e-4}, 0.0),
    "GRCN": ({"reg_weight": [1e-3], "learning_rate": [1e-3], "n_layers": 3}, "grcn",
             {"reg_weight": 1e-3, "n_routing": 3, "content_dim": 64}, 0.0),
    "MGCN": ({"cl_loss": [0.01], "n_ui_layers": 2, "n_layers": 1, "knn_k": 10, "reg_weight": 1e-4}, "mgcn",
             {"cl_loss": 0.01, "n_ui_layers": 2, "n_layers": 1, "knn_k": 10, "reg_weight": 1e-4}, 0.0),
    "SLMRec": ({"learning_rate": [1e-3], "ssl_temp": [0.2], "ssl_alpha": [0.1], "reg": [1e-4], "weight_decay": 1e-4,
                "layer_num": 3, "temp": 0.2, "ssl_task": "FAC", "dropout_rate": 0.3}, "slmrec",
               {"n_layers": 3, "temp": 0.2, "ssl_task": "FAC", "ssl_alpha": 0.1, "ssl_temp": 0.2,
                "dropout_rate": 0.3}, 1e-4),
}
DEFAULT_MODELS = ["BPR", "LightGCN", "VBPR", "LayerGCN", "BM3", "FREEDOM", "MGCN", "SLMRec", "GRCN"]
# models timed on the datasets other than ml100k (Baby scale), where MMRec's GRCN and SLMRec take minutes an epoch
LARGE_MODELS = ["LightGCN", "VBPR", "BM3", "FREEDOM", "MGCN"]
# epochs per process (the first is a warm-up): fewer for the slow models and at Baby scale
EPOCHS = {"GRCN": 3, "SLMRec": 4, "MGCN": 5}
EPOCHS_LARGE = 4
SIDES = ("mmrec", "motor-id", "motor-ms")
# models whose raw feature matrices MMRec trains: compared with both trained and frozen features (``--features``)
FEATURE_MODELS = ("FREEDOM", "BM3", "MGCN")
FEATURE_MODES = ("trained", "frozen")

# The compatibility patches: (id, file under src/, original text, patched text, occurrences).
P3_FILES = ["common/encoders.py", "models/lightgcn.py", "models/freedom.py", "models/bm3.py", "models/layergcn.py",
            "models/lgmrec.py", "models/pgl.py", "models/damrs.py"]
PATCHES = [
    # P1: unused imports that need torchvision / lmdb
    ("P1", "utils/dataset.py",
     "from utils.data_utils import (ImageResize, ImagePad, image_to_tensor, load_decompress_img_from_lmdb_value)",
     "# [motor patch P1] from utils.data_utils import (ImageResize, ImagePad, image_to_tensor, "
     "load_decompress_img_from_lmdb_value)", 1),
    ("P1", "utils/dataset.py", "\nimport lmdb", "\n# [motor patch P1] import lmdb", 1),
    # P2: np.float was removed in NumPy 1.24
    ("P2", "utils/metrics.py", "np.float)", "float)", 4),
    # P3: dok_matrix._update was removed in SciPy 1.13 (same semantics)
    *[("P3", f, "        A._update(data_dict)", "        A._dict.update(data_dict)  # [motor patch P3]", 1)
      for f in P3_FILES],
    # P4: an ImportError at e775373
    ("P4", "models/layergcn.py", "from models.common.abstract_recommender import GeneralRecommender\n",
     "from common.abstract_recommender import GeneralRecommender  # [motor patch P4]\n", 1),
    ("P4", "models/layergcn.py", "from models.common.loss import BPRLoss, EmbLoss, L2Loss\n",
     "from common.loss import BPRLoss, EmbLoss, L2Loss  # [motor patch P4]\n", 1),
    # P5: no torch-scatter wheel for torch 2.13; SLMRec uses it only in commented-out code
    ("P5", "models/slmrec.py", "\nfrom torch_scatter import scatter\n",
     "\ntry:  # [motor patch P5]\n    from torch_scatter import scatter\nexcept ImportError:\n    scatter = None\n", 1),
    # P6: CPU instead of .cuda()
    ("P6", "models/grcn.py", "torch.LongTensor(features).cuda()", "torch.LongTensor(features)  # [motor patch P6]", 1),
    ("P6", "models/grcn.py", "torch.zeros(1).cuda()", "torch.zeros(1).to(self.device)  # [motor patch P6]", 1),
    ("P6", "models/mgcn.py", "image_adj.cuda()", "image_adj.to(self.device)  # [motor patch P6]", 1),
    ("P6", "models/mgcn.py", "text_adj.cuda()", "text_adj.to(self.device)  # [motor patch P6]", 1),
    # P7: torch_scatter's scatter_add -> Tensor.scatter_add_ (MGCN's sparse kNN graph; identical sums)
    ("P7", "utils/utils.py",
     "    from torch_scatter import scatter_add\n"
     "    row, col = edge_index[0], edge_index[1]\n"
     "    deg = scatter_add(edge_weight, row, dim=0, dim_size=num_nodes)",
     "    row, col = edge_index[0], edge_index[1]\n"
     "    try:  # [motor patch P7]\n"
     "        from torch_scatter import scatter_add\n"
     "        deg = scatter_add(edge_weight, row, dim=0, dim_size=num_nodes)\n"
     "    except ImportError:\n"
     "        deg = torch.zeros(num_nodes, dtype=edge_weight.dtype, device=edge_weight.device)"
     ".scatter_add_(0, row, edge_weight)", 1),
]
# P8, only in the frozen-features copy: MMRec's raw feature matrices frozen (motor's default), image and text
FROZEN_FEATURES_PATCHES = [
    ("P8", f"models/{m.lower()}.py", "freeze=False)\n", "freeze=True)  # [motor patch P8]\n", 2)
    for m in FEATURE_MODELS
]


def say(msg: str) -> None:
    print(f"[vs_mmrec] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ setup


def patch_mmrec(root: Path, frozen_features: bool = False) -> None:
    """Apply P1-P7 (and P8 with ``frozen_features``) to the MMRec copy ``root`` (idempotent); stops before writing
    if a spot matches neither form."""
    texts: dict[str, str] = {}
    for pid, rel, old, new, expected in PATCHES + (FROZEN_FEATURES_PATCHES if frozen_features else []):
        text = texts.setdefault(rel, (root / "src" / rel).read_text())
        if pid == "P2":  # a plain substitution inside 4 lines, marked at the line end
            lines = text.split("\n")
            done = sum(line.endswith("# [motor patch P2]") for line in lines)
            todo = [j for j, line in enumerate(lines) if old in line and not line.endswith("# [motor patch P2]")]
            if done + len(todo) != expected:
                raise SystemExit(f"patch {pid} {rel}: {len(todo)} + {done} lines match, expected {expected}; "
                                 f"is this MMRec at {MMREC_COMMIT[:7]}?")
            for j in todo:
                lines[j] = lines[j].replace(old, new) + "  # [motor patch P2]"
            texts[rel] = "\n".join(lines)
            continue
        done = text.count(new)
        hidden = text.replace(new, "\0")  # the patched text may contain the original (P1, P5)
        if hidden.count(old) + done != expected:
            raise SystemExit(f"patch {pid} {rel}: {old.strip()[:60]!r} found {hidden.count(old)}x, patched {done}x, "
                             f"expected {expected}; is this MMRec at {MMREC_COMMIT[:7]}?")
        texts[rel] = hidden.replace(old, new).replace("\0", new)
    for rel, text in texts.items():
        ast.parse(text, filename=rel)
        path = root / "src" / rel
        if path.read_text() != text:
            path.write_text(text)
    say(f"MMRec patches P1-P{8 if frozen_features else 7} applied in {root}")


def prepare_mmrec(source: Path, work: Path, commit: str, frozen_features: bool = False) -> Path:
    """``work``/MMRec: a patched copy of ``source`` (a checkout, or a bare mirror to extract ``commit`` from);
    ``frozen_features``: ``work``/MMRec-frozen-features, the same with P8 (raw feature matrices frozen)."""
    dest = work / ("MMRec-frozen-features" if frozen_features else "MMRec")
    is_checkout = (source / "src" / "main.py").is_file()
    tag = f"checkout:{source.resolve()}" if is_checkout else f"mirror:{source.resolve()}@{commit}"
    if not (dest / ".source").is_file() or (dest / ".source").read_text() != tag:
        tmp = work / f".{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if is_checkout:
            shutil.copytree(source / "src", tmp / "src")
        else:
            git_dir = next((d for d in (source / "repo", source, source / ".git")
                            if subprocess.run(["git", "--git-dir", str(d), "cat-file", "-e", f"{commit}^{{commit}}"],
                                              capture_output=True).returncode == 0), None)
            if git_dir is None:
                raise SystemExit(f"--mmrec {source}: neither an MMRec checkout (src/main.py) nor a git mirror "
                                 f"holding commit {commit}")
            tmp.mkdir(parents=True)
            archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", commit, "src"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        (tmp / "data").mkdir(exist_ok=True)
        (tmp / ".source").write_text(tag)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        say(f"MMRec copied from {tag} to {dest}")
    patch_mmrec(dest, frozen_features)
    return dest


def mmrec_commit_of(source: Path, commit: str) -> str:
    if (source / "src" / "main.py").is_file():
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True)
        return out.stdout.strip() + " (checkout)" if out.returncode == 0 else "unknown (checkout without git)"
    return commit[:7]


def setup_venv(work: Path, python: str) -> Path:
    """``work``/venv-mmrec with torch 2.13.0 (CPU wheel) and the pinned packages of requirements-mmrec.txt."""
    venv = work / "venv-mmrec"
    py = venv / "bin" / "python"
    reqs = HERE.parent / "requirements-mmrec.txt"
    if not py.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(reqs)], check=True)
    subprocess.run([str(py), "-c", "import torch, numpy, scipy, pandas, yaml, matplotlib"], check=True)
    say(f"MMRec venv ready: {py}")
    return py


def write_babysyn(out: Path) -> None:
    """motor's Baby-scale synthetic data as an MMRec folder (users and items renumbered over the rows that occur:
    MMRec takes n_items from the largest item id)."""
    import numpy as np

    from motor.synthetic import baby_scale

    ds = baby_scale(seed=0)
    parts = [np.c_[m.tocoo().row, m.tocoo().col, np.full(m.nnz, lab)] for lab, m in
             enumerate((ds.train, ds.valid, ds.test))]
    arr = np.concatenate(parts).astype(np.int64)
    _, arr[:, 0] = np.unique(arr[:, 0], return_inverse=True)
    items, arr[:, 1] = np.unique(arr[:, 1], return_inverse=True)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / f"{out.name}.inter", "w") as fh:
        fh.write("userID\titemID\trating\ttimestamp\tx_label\n")
        fh.writelines(f"{u}\t{i}\t1\t0\t{lab}\n" for u, i, lab in arr)
    for m in ("image", "text"):
        np.save(tmp / f"{m}_feat.npy", np.ascontiguousarray(ds.features[m][items], dtype=np.float32))
    tmp.rename(out)


def write_baby5(split_dir: Path, out: Path) -> None:
    """The real Amazon Baby 5-core interactions ({train,val,test}.json: user -> items) with random features of
    Baby's shapes (image 4,096-d ReLU(Gaussian), text 384-d unit vectors, seed 2024): speed only."""
    import numpy as np

    rows = [(int(u), int(i), label) for label, f in enumerate(("train.json", "val.json", "test.json"))
            for u, items in json.loads((split_dir / f).read_text()).items() for i in items]
    arr = np.array(sorted(rows), dtype=np.int64)
    n_items = int(arr[:, 1].max()) + 1
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / f"{out.name}.inter", "w") as fh:
        fh.write("userID\titemID\trating\ttimestamp\tx_label\n")
        fh.writelines(f"{u}\t{i}\t1\t0\t{lab}\n" for u, i, lab in arr)
    rng = np.random.default_rng(2024)
    np.save(tmp / "image_feat.npy", np.maximum(rng.standard_normal((n_items, 4096), dtype=np.float32), 0))
    text = rng.standard_normal((n_items, 384), dtype=np.float32)
    np.save(tmp / "text_feat.npy", text / np.linalg.norm(text, axis=1, keepdims=True))
    tmp.rename(out)


def prepare_dataset(name: str, data_root: Path, work: Path, mmrec: Path, baby5: Path | None = None) -> None:
    """motor reads ``work``/data/<name> (a link to the data root's folder, or generated); MMRec a copy of the
    three files in its data folder (it writes its graph caches next to them) and a dataset config."""
    mine = work / "data" / name
    mine.parent.mkdir(parents=True, exist_ok=True)
    if name == "babysyn":
        if not mine.is_dir():
            say("babysyn: generating motor's synthetic data at Baby scale")
            write_babysyn(mine)
    elif name == "baby5":
        if not mine.is_dir():
            if baby5 is None or not (baby5 / "train.json").is_file():
                raise SystemExit("baby5 needs --baby5 DIR holding the Baby 5-core train.json, val.json, test.json")
            say(f"baby5: Baby 5-core interactions from {baby5} with random features")
            write_baby5(baby5, mine)
    elif not mine.exists():
        if not (data_root / name).is_dir():
            raise SystemExit(f"dataset {name!r}: no folder {data_root / name} (set --data-root or MOTOR_DATA)")
        mine.symlink_to((data_root / name).resolve())
    files = [f"{name}.inter", "image_feat.npy", "text_feat.npy"]
    missing = [f for f in files if not (mine / f).is_file()]
    if missing:
        raise SystemExit(f"dataset {name!r}: {mine} lacks {missing} (MMRec needs {', '.join(files)})")
    theirs = mmrec / "data" / name
    theirs.mkdir(parents=True, exist_ok=True)
    changed = False
    for f in files:
        src, dst = mine / f, theirs / f
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst.with_suffix(".tmp"))
            dst.with_suffix(".tmp").rename(dst)
            changed = True
    if changed:  # MMRec's kNN caches are keyed by hyper-parameters only: drop them with the old data
        for stale in theirs.glob("*.pt"):
            stale.unlink()
    base = (mmrec / "src" / "configs" / "dataset" / "baby.yaml").read_text()
    (mmrec / "src" / "configs" / "dataset" / f"{name}.yaml").write_text(
        base.replace("inter_file_name: 'baby.inter'", f"inter_file_name: '{name}.inter'"))


# ------------------------------------------------------------------------------------------------ one process


def _median_after_warmup(xs: list[float]) -> float | None:
    return float(st.median(xs[1:])) if len(xs) > 1 else None


def child_mmrec(src: Path, model: str, dataset: str, sets: dict) -> dict:
    """MMRec's own quick_start in this process (MMRec's venv). Observed, not changed: the trainer's clock (its
    ``from time import time``) and its per-epoch ``_valid_epoch`` calls (valid pass, then test pass)."""
    import torch

    torch.set_num_threads(1)
    os.chdir(src)  # MMRec resolves configs/ and ../data/ from src/
    # MMRec's packages have no __init__.py: this script's folder (its common.py) must not shadow them
    sys.path[:] = [str(src)] + [p for p in sys.path if Path(p or ".").resolve() != HERE.parent]
    import common.trainer as trainer
    import yaml
    from utils.configurator import Config
    from utils.quick_start import quick_start

    rec = {"train_s": [], "train_cpu_s": [], "eval_s": [], "eval_cpu_s": [], "test_eval_s": []}
    cpu_at: dict[float, float] = {}

    def clock() -> float:
        t = time.time()
        cpu_at[t] = time.process_time()
        return t

    trainer.time = clock
    log_epoch = trainer.Trainer._generate_train_loss_output

    def on_epoch(self, epoch_idx, s_time, e_time, losses):
        rec["train_s"].append(e_time - s_time)
        rec["train_cpu_s"].append(cpu_at[e_time] - cpu_at[s_time])
        return log_epoch(self, epoch_idx, s_time, e_time, losses)

    trainer.Trainer._generate_train_loss_output = on_epoch
    valid_epoch = trainer.Trainer._valid_epoch

    def on_valid(self, data):
        t, c = time.perf_counter(), time.process_time()
        out = valid_epoch(self, data)
        if len(rec["eval_s"]) == len(rec["test_eval_s"]):  # valid first, then test, every epoch
            rec["eval_s"].append(time.perf_counter() - t)
            rec["eval_cpu_s"].append(time.process_time() - c)
        else:
            rec["test_eval_s"].append(time.perf_counter() - t)
        return out

    trainer.Trainer._valid_epoch = on_valid
    loader = Config._build_yaml_loader(None)  # MMRec's YAML loader reads 1e-4 as a float
    config = {"gpu_id": 0, "use_gpu": False, "stopping_step": 10**6}
    config.update({k: yaml.load(json.dumps(v), Loader=loader) for k, v in sets.items()})
    quick_start(model=model, dataset=dataset, config_dict=config, save_model=False)
    return {**rec, "threads": torch.get_num_threads()}


def child_motor(dataset: str, backbone: str, kind: str, epochs: int, hparams: dict, weight_decay: float) -> dict:
    """motor's trainer on the file's own split (as MMRec reads it): Adam lr 1e-3, batch 2048, embedding 64, seed 0,
    no early stopping, a valid evaluation after every epoch. Training CPU per epoch = CPU between the trainer's
    epoch callbacks minus the CPU of its evaluation call (``motor.train.evaluate``, observed)."""
    import torch

    torch.set_num_threads(1)
    import motor
    import motor.train as trainer
    from motor.backbones import build
    from motor.item_repr import build_item_repr
    from motor.tokenizer import n_centroids_of

    eval_cpu: list[float] = []
    evaluate = trainer.evaluate

    def timed_evaluate(*args, **kwargs):
        c = time.process_time()
        out = evaluate(*args, **kwargs)
        eval_cpu.append(time.process_time() - c)
        return out

    trainer.evaluate = timed_evaluate
    t0 = time.perf_counter()
    ds = motor.load(dataset)
    tok = motor.tokenize(ds, 4) if kind != "id" else None
    torch.manual_seed(0)
    rep = build_item_repr(kind, ds.n_items, 64, token_ids=tok, n_centroids=n_centroids_of(tok) if tok else 256)
    model = build(backbone, ds, rep, dim=64, **hparams)
    setup = time.perf_counter() - t0
    marks: list[float] = []
    start = time.process_time()
    result = trainer.train(model, ds, epochs=epochs, lr=1e-3, batch_size=2048, patience=10**9, seed=0,
                           weight_decay=weight_decay, progress=False,
                           callbacks=[lambda epoch, record: marks.append(time.process_time())])
    if len(eval_cpu) != len(marks):
        raise SystemExit("motor's trainer no longer evaluates through motor.train.evaluate once per epoch: "
                         "adapt child_motor() in benchmarks/vs_mmrec.py")
    epoch_cpu = [end - begin for begin, end in zip([start] + marks[:-1], marks)]
    h = result.history
    return {"train_s": h["train_seconds"].tolist(), "train_cpu_s": [e - v for e, v in zip(epoch_cpu, eval_cpu)],
            "eval_s": h["eval_seconds"].tolist(), "eval_cpu_s": eval_cpu, "setup_s": setup,
            "n_users": ds.n_users, "n_items": ds.n_items, "n_train": int(ds.train.nnz),
            "threads": torch.get_num_threads(), "final_loss": float(h["loss"].iloc[-1])}


def child_main(argv: list[str]) -> None:
    """``--child mmrec|motor JSON``: run one timed process and print ``RESULT {json}`` as its last line."""
    side, spec = argv[0], json.loads(argv[1])
    t0 = time.perf_counter()
    if side == "mmrec":
        rec = child_mmrec(Path(spec["src"]), spec["model"], spec["dataset"], spec["sets"])
    else:
        rec = child_motor(spec["dataset"], spec["backbone"], spec["kind"], spec["epochs"], spec["hparams"],
                          spec["weight_decay"])
    rec.update({key + "_med": _median_after_warmup(rec[key])
                for key in ("train_s", "train_cpu_s", "eval_s", "eval_cpu_s")})
    rec.update(process_wall_s=time.perf_counter() - t0, process_cpu_s=time.process_time(),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(rec), flush=True)


# ------------------------------------------------------------------------------------------------ the run


def child_env(work: Path, side: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MOTOR_DATA": str(work / "data"), "MOTOR_CACHE": str(work / "cache"), "MOTOR_RUNS": str(work / "runs")}
    if side != "mmrec":  # this checkout's motor, installed or not
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.pop("OMP_WAIT_POLICY", None)  # the OpenMP runtime default on both sides
    return env


def cell_label(model: str, features: str | None) -> str:
    """The table's model column: ``FREEDOM (trained features)``, ``FREEDOM (frozen features)``, ``BPR``."""
    return f"{model} ({features} features)" if features else model


def cells_of(models: list[str], features: str) -> list[tuple[str, str | None]]:
    """(model, feature mode) pairs to time: ``features`` ("trained", "frozen" or "both") for FEATURE_MODELS,
    None (one row, nothing to equalise) for the others."""
    modes = FEATURE_MODES if features == "both" else (features,)
    return [(m, f) for m in models for f in (modes if m in FEATURE_MODELS else (None,))]


def run_one(side: str, dataset: str, model: str, rnd: int, epochs: int, a, work: Path, results: Path,
            features: str | None = None) -> dict:
    """One timed process. ``features`` (FEATURE_MODELS only): "trained" = MMRec as it is vs motor with
    ``train_features=True``; "frozen" = MMRec with P8 vs motor's default."""
    sets, backbone, hparams, weight_decay = MODELS[model]
    label = cell_label(model, features)
    if side == "mmrec":
        copy = "MMRec-frozen-features" if features == "frozen" else "MMRec"
        spec = {"src": str(work / copy / "src"), "model": model, "dataset": dataset,
                "sets": {**sets, "epochs": epochs, "weight_decay": weight_decay, **a.mmrec_set}}
        python = a.mmrec_python
    else:
        own = {"train_features": True} if features == "trained" else {}
        spec = {"dataset": dataset, "backbone": backbone, "kind": side.split("-")[1], "epochs": epochs,
                "hparams": {**hparams, **own, **a.motor_hp}, "weight_decay": weight_decay}
        python = sys.executable
    tag = f"{model}-{features}" if features else model
    log = work / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{dataset}-{tag}-{side}-r{rnd}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([str(python), str(HERE), "--child", side.split("-")[0], json.dumps(spec)], stdout=fh,
                              stderr=subprocess.STDOUT, env=child_env(work, side), cwd=work, timeout=a.timeout)
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    rec = {"dataset": dataset, "model": label, "features": features, "side": side, "round": rnd,
           "rc": proc.returncode,
           "load_before": round(load_before, 2), "wall_s": round(time.perf_counter() - t, 1), "log": str(log),
           "result": json.loads(lines[-1][7:]) if lines and proc.returncode == 0 else None}
    with open(results, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    r = rec["result"] or {}
    fmt = lambda x: "  -  " if x is None else f"{x:.3f}"  # noqa: E731
    say(f"{dataset} {label} {side:8s} r{rnd}: " + (
        f"epoch {fmt(r.get('train_s_med'))} s (cpu {fmt(r.get('train_cpu_s_med'))}), "
        f"eval {fmt(r.get('eval_s_med'))} s, peak {r.get('peak_rss_mb', 0):.0f} MB"
        if rec["result"] else f"FAILED (rc {proc.returncode}), see {log}"))
    return rec


def meta(a, source: Path | None) -> dict:
    def git(*args):
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+uncommitted"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.machine()
    versions = subprocess.run([str(a.mmrec_python), "-c", "import torch; print(torch.__version__)"],
                              capture_output=True, text=True).stdout.strip()
    import torch

    return {"meta": True, "started": time.strftime("%Y-%m-%d %H:%M %Z"), "motor_commit": commit,
            "mmrec_commit": mmrec_commit_of(source, a.mmrec_commit) if source else "?", "cpus": os.cpu_count(),
            "cpu_model": cpu, "torch_motor": torch.__version__, "torch_mmrec": versions,
            "python": platform.python_version(), "threads": 1,
            "plan": f"datasets {' '.join(a.datasets)}; models {' '.join(a.models)} (ml100k), "
                    f"{' '.join(a.large_models)} (larger data); repeats {a.repeats} (ml100k), "
                    f"{a.large_repeats or a.repeats} (larger data); features {a.features}"}


# ------------------------------------------------------------------------------------------------ report


def _fmt(xs: list[float], nd: int = 3) -> str:
    if not xs:
        return "–"
    m = st.median(xs)
    return f"{m:.{nd}f}" if len(xs) == 1 else f"{m:.{nd}f} ({min(xs):.{nd}f}–{max(xs):.{nd}f})"


def _ratio(a: dict[int, float], b: dict[int, float]) -> str:
    """Ratio of medians, and the range of the per-round ratios (round r of A over round r of B)."""
    if not a or not b:
        return "–"
    m = st.median(a.values()) / st.median(b.values())
    per_round = [a[r] / b[r] for r in a if r in b and b[r]]
    return f"{m:.2f}×" + (f" ({min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else "")


def report(results: Path) -> str:
    recs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    head = next((r for r in recs if r.get("meta")), None)
    runs = [r for r in recs if not r.get("meta")]
    out = []
    if head:
        out.append(f"Run {head['started']}: motor {head['motor_commit']}, MMRec {head['mmrec_commit']}, "
                   f"{head['cpus']} CPUs ({head['cpu_model']}), 1 thread per process, torch {head['torch_motor']} "
                   f"(motor) / {head['torch_mmrec']} (MMRec), Python {head['python']}; {head['plan']}.")
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for r in runs:
        cells.setdefault((r["dataset"], r["model"]), {}).setdefault(r["side"], [])
        if r["rc"] == 0 and r["result"]:
            cells[(r["dataset"], r["model"])][r["side"]].append(r)

    def by_round(rs, field):
        return {r["round"]: r["result"][field] for r in rs if r["result"].get(field) is not None}

    for dataset in dict.fromkeys(k[0] for k in cells):
        out.append(f"\n#### {dataset}: process CPU seconds per training epoch and per evaluation (1 thread)\n")
        out.append("| model | MMRec s/epoch | motor id | motor ms | MMRec/id | MMRec/ms | ms/id | MMRec eval s | "
                   "motor eval s (id; ms) | eval MMRec/id | n (MMRec, id, ms) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for (d, model), sides in cells.items():
            if d != dataset:
                continue
            m, i, s = (sides.get(k, []) for k in SIDES)
            mt, it, smt = (by_round(x, "train_cpu_s_med") for x in (m, i, s))
            me, ie, se = (by_round(x, "eval_cpu_s_med") for x in (m, i, s))
            out.append(f"| {model} | {_fmt(list(mt.values()))} | {_fmt(list(it.values()))} | "
                       f"{_fmt(list(smt.values()))} | {_ratio(mt, it)} | {_ratio(mt, smt)} | {_ratio(smt, it)} | "
                       f"{_fmt(list(me.values()))} | {_fmt(list(ie.values()))}; {_fmt(list(se.values()))} | "
                       f"{_ratio(me, ie)} | {len(m)}, {len(i)}, {len(s)} |")
        out.append(f"\n#### {dataset}: wall-clock seconds per training epoch and per evaluation, peak RSS\n")
        out.append("| model | MMRec s/epoch | motor id | motor ms | MMRec/id | MMRec/ms | MMRec eval s | "
                   "motor eval s (id; ms) | eval MMRec/id | peak RSS MB (MMRec / id / ms) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for (d, model), sides in cells.items():
            if d != dataset:
                continue
            m, i, s = (sides.get(k, []) for k in SIDES)
            mt, it, smt = (by_round(x, "train_s_med") for x in (m, i, s))
            me, ie, se = (by_round(x, "eval_s_med") for x in (m, i, s))
            peak = " / ".join(f"{max(r['result']['peak_rss_mb'] for r in x):.0f}" if x else "–" for x in (m, i, s))
            out.append(f"| {model} | {_fmt(list(mt.values()))} | {_fmt(list(it.values()))} | "
                       f"{_fmt(list(smt.values()))} | {_ratio(mt, it)} | {_ratio(mt, smt)} | "
                       f"{_fmt(list(me.values()))} | {_fmt(list(ie.values()))}; {_fmt(list(se.values()))} | "
                       f"{_ratio(me, ie)} | {peak} |")
        loads = [r["load_before"] for r in runs if r["dataset"] == dataset]
        out.append(f"\n{len(loads)} processes; 1-minute load average before each: median {st.median(loads):.2f} "
                   f"(range {min(loads):.2f}–{max(loads):.2f}).")
    if any(r.get("features") for r in runs):
        out.append("\n(trained features): motor with train_features=True vs MMRec as it is (freeze=False); "
                   "(frozen features): motor's default vs MMRec with patch P8 (freeze=True).")
    failed = [r for r in runs if r["rc"] != 0 or not r["result"]]
    if failed:
        out.append("\nFailed: " + ", ".join(f"{r['dataset']}:{r['model']}:{r['side']}:r{r['round']} ({r['log']})"
                                            for r in failed))
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--mmrec", type=Path, help="MMRec checkout (holds src/main.py) or a bare git mirror of it")
    ap.add_argument("--mmrec-commit", default=MMREC_COMMIT, help="commit to extract from a mirror")
    ap.add_argument("--mmrec-python", type=Path, default=None,
                    help="python of MMRec's venv (default: WORK/venv-mmrec/bin/python)")
    ap.add_argument("--setup-venv", action="store_true", help="create/refresh WORK/venv-mmrec, then continue")
    ap.add_argument("--python", default="python3.11", help="interpreter for --setup-venv")
    ap.add_argument("--work", type=Path, default=REPO / ".vs_mmrec", help="work folder (default .vs_mmrec/)")
    default_root = os.environ.get("MOTOR_DATA") or (
        REPO.parent / "shared" / "data" if (REPO.parent / "shared" / "data").is_dir() else REPO / "data")
    ap.add_argument("--data-root", type=Path, default=Path(default_root))
    ap.add_argument("--datasets", nargs="+", default=["ml100k"],
                    help="folders of the data root, babysyn (generated), or baby5 (needs --baby5)")
    ap.add_argument("--baby5", type=Path, default=None,
                    help="folder with the Amazon Baby 5-core train.json, val.json, test.json (user -> items)")
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    ap.add_argument("--features", choices=["frozen", "trained", "both"], default="both",
                    help=f"raw feature matrices of {', '.join(FEATURE_MODELS)}: trained on both sides (MMRec as it "
                         "is, motor train_features=True), frozen on both (MMRec patched with P8, motor's default), "
                         "or both pairs (default)")
    ap.add_argument("--large-models", nargs="+", default=LARGE_MODELS, choices=list(MODELS),
                    help="models timed on every dataset other than ml100k (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of (MMRec, motor-id, motor-ms) per cell")
    ap.add_argument("--large-repeats", type=int, default=None,
                    help="rounds per cell on the datasets other than ml100k (default: --repeats)")
    ap.add_argument("--epochs", type=int, default=None,
                    help=f"epochs per process, >= 2 (default 6 on ml100k, {EPOCHS_LARGE} on larger data; "
                         f"{EPOCHS} for the slow models)")
    ap.add_argument("--mmrec-set", type=json.loads, default={}, help="extra MMRec config as JSON, every model")
    ap.add_argument("--motor-hp", type=json.loads, default={}, help="extra motor backbone kwargs as JSON")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    ap.add_argument("--results", type=Path, default=None, help="JSON lines file (default WORK/results/<stamp>.jsonl)")
    ap.add_argument("--report", type=Path, default=None, help="print the tables of a results file and exit")
    a = ap.parse_args()
    if a.report:
        print(report(a.report))
        return
    if a.mmrec is None:
        ap.error("--mmrec PATH is required (an MMRec checkout, or the bare mirror `fetch github:enoche/MMRec` gives)")
    if a.epochs is not None and a.epochs < 2:
        ap.error("--epochs must be >= 2: the first epoch is a warm-up")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():
        (work / ".gitignore").write_text("*\n")  # keeps git status clean when the folder sits in the checkout
    a.mmrec_python = a.mmrec_python or work / "venv-mmrec" / "bin" / "python"
    if a.setup_venv:
        a.mmrec_python = setup_venv(work, a.python)
    if "mmrec" in a.sides and not Path(a.mmrec_python).exists():
        ap.error(f"MMRec's python {a.mmrec_python} not found: pass --mmrec-python or add --setup-venv")
    def plan(dataset: str) -> tuple[list[tuple[str, str | None]], int]:  # (cells, rounds) of a dataset
        if dataset == "ml100k":
            return cells_of(a.models, a.features), a.repeats
        return cells_of(a.large_models, a.features), a.large_repeats or a.repeats

    cells = [c for d in a.datasets for c in plan(d)[0]]
    copies = [prepare_mmrec(a.mmrec, work, a.mmrec_commit)]
    if "mmrec" in a.sides and any(f == "frozen" for _, f in cells):
        copies.append(prepare_mmrec(a.mmrec, work, a.mmrec_commit, frozen_features=True))
    for dataset in a.datasets:
        for mmrec in copies:
            prepare_dataset(dataset, a.data_root, work, mmrec, a.baby5)
    results = a.results or work / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as fh:
        fh.write(json.dumps(meta(a, a.mmrec)) + "\n")
    for dataset in a.datasets:
        dcells, rounds = plan(dataset)
        say(f"{dataset}: {len(dcells)} model row(s) x {rounds} round(s) x {len(a.sides)} side(s), 1 thread each; "
            f"results {results}")
    for dataset in a.datasets:
        dcells, rounds = plan(dataset)
        for model, features in dcells:
            epochs = a.epochs or EPOCHS.get(model, 6 if dataset == "ml100k" else EPOCHS_LARGE)
            for rnd in range(1, rounds + 1):
                for side in a.sides:
                    try:
                        run_one(side, dataset, model, rnd, epochs, a, work, results, features)
                    except subprocess.TimeoutExpired:
                        say(f"{dataset} {cell_label(model, features)} {side} r{rnd}: TIMEOUT after "
                            f"{a.timeout:.0f} s")
    tables = report(results)
    results.with_suffix(".md").write_text(tables + "\n")
    print(tables)


if __name__ == "__main__":
    main()
