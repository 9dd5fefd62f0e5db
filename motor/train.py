"""The trainer shared by every backbone: Adam, BPR-style batches, early stopping on *validation* only.

* one uniform negative per positive, drawn vectorised and never a training positive of that user;
* early stopping on valid ``recall@20`` (patience 20 by default); the best-valid weights are restored at the end;
  the test split is never read here;
* ``seed`` makes CPU runs bit-identical; a checkpoint is written atomically after every epoch and
  ``resume=True`` continues from it exactly (model, optimizer, RNG states, history); the file carries a checksum
  and a fingerprint of the run, so a damaged checkpoint or one of another configuration stops with the fix;
* a NaN loss stops the run with a clear message.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .cache import atomic_write_bytes, fingerprint
from .defaults import BATCH_SIZE, EPOCHS, LR, PATIENCE
from .evaluate import DEFAULT_KS, evaluate
from .perf import keep_freed_memory


@dataclass
class TrainConfig:
    """Defaults follow MMRec / the paper (:mod:`motor.defaults`): Adam lr 1e-3, batch 2048, patience 20 on valid
    Recall@20."""

    epochs: int = EPOCHS
    lr: float = LR
    batch_size: int = BATCH_SIZE
    patience: int = PATIENCE
    valid_metric: str = "recall@20"
    eval_every: int = 1
    ks: tuple = DEFAULT_KS
    seed: int = 0
    device: str = "cpu"
    weight_decay: float | None = None  # Adam's L2 weight decay; None: the backbone's own (see trainer_settings)
    lr_schedule: tuple | None = None  # (factor, epochs): lr x factor ** (epoch / epochs); None: the backbone's own
    checkpoint: str | None = None  # file path; written atomically after every epoch
    resume: bool = False
    progress: bool = True
    eval_batch_users: int = 4096


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    best_valid: dict[str, float]
    stopped: str  # "early_stopping" | "max_epochs" | "not_trainable"
    train_seconds: float
    epochs_run: int = 0
    extra: dict = field(default_factory=dict)


def train_keys(train: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys user * n_items + item of the training positives (for O(log n) membership tests)."""
    coo = train.tocoo()
    return np.sort(coo.row.astype(np.int64) * train.shape[1] + coo.col)


def sample_negatives(users: np.ndarray, n_items: int, keys: np.ndarray, rng: np.random.Generator,
                     max_rounds: int = 100) -> np.ndarray:
    """One uniform item per user in ``users`` that is not a training positive of that user (vectorised)."""
    neg = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(max_rounds):
        q = users[todo].astype(np.int64) * n_items + neg[todo]
        pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        clash = keys[pos] == q
        todo = todo[clash]
        if len(todo) == 0:
            return neg
        neg[todo] = rng.integers(0, n_items, size=len(todo))
    stuck = np.unique(users[todo])
    raise RuntimeError(f"could not sample negatives for user rows {stuck[:5].tolist()}: in {max_rounds} uniform "
                       f"draws each met only items the user trained on, so they interacted with almost every one of "
                       f"the {n_items:,} items. Fix: drop those users (or most of their items) from the data.")


def check_negatives_exist(dataset) -> None:
    """A ValueError naming the users (the file's userIDs) whose training interactions cover every item: BPR
    training needs an item a user has not interacted with."""
    per_user = np.diff(dataset.train.indptr)
    full = np.flatnonzero(per_user >= dataset.n_items)
    if len(full):
        ids = dataset.user_id(full) if hasattr(dataset, "user_id") else full
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r}: user(s) {ids[:5].tolist()} interacted with "
                         f"every one of its {dataset.n_items:,} items in training, so there is no item to sample "
                         "as a negative for them. Fix: drop those users, move some of their rows to valid/test, "
                         "or add items.")


def make_optimizer(model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over the trainable parameters; the fused kernel where the device has one (about 4x faster per step
    on CPU than the per-tensor loop, the same update up to float rounding)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device / dtype
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def trainer_settings(backbone, weight_decay: float | None = None, lr_schedule=None) -> dict:
    """Effective weight decay and learning-rate schedule of a run: an explicit value wins, else the backbone's own
    (its class attribute ``trainer_defaults``, e.g. SLMRec's weight decay 1e-4, as in its MMRec configuration),
    else 0 and a constant rate. ``backbone``: a model, a backbone class, or None.

    ``lr_schedule`` = (factor, epochs) is MMRec's ``learning_rate_scheduler``: epoch e (0-based) trains with
    ``lr * factor ** (e / epochs)``, i.e. x factor every ``epochs`` epochs, decayed smoothly.
    """
    own = getattr(backbone, "trainer_defaults", None) or {}
    wd = own.get("weight_decay", 0.0) if weight_decay is None else weight_decay
    sched = own.get("lr_schedule") if lr_schedule is None else lr_schedule
    if not (isinstance(wd, (int, float)) and wd >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {wd!r}")
    if sched is not None:
        if len(sched) != 2 or not 0 < float(sched[0]) <= 1 or not float(sched[1]) > 0:
            raise ValueError(f"lr_schedule must be (factor in (0, 1], epochs > 0), e.g. (0.96, 50); got {sched!r}")
        sched = (float(sched[0]), float(sched[1]))
        if sched[0] == 1.0:
            sched = None  # a factor of 1 is the constant rate
    return {"weight_decay": float(wd), "lr_schedule": sched}


def scheduled_lr(lr: float, lr_schedule, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` under ``lr_schedule`` (None: constant)."""
    if lr_schedule is None:
        return lr
    factor, every = lr_schedule
    return lr * factor ** (epoch / every)


def _state_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


CHECKPOINT_MAGIC = b"MOTOR-CHECKPOINT 1\n"
# TrainConfig fields a resumed run may change: they decide how long to train and where, not what is computed
_RESUMABLE_CHANGES = ("epochs", "patience", "device", "progress", "checkpoint", "resume", "eval_batch_users")


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from; the message names the file and the fix."""


def run_description(model, dataset, cfg: TrainConfig, settings: dict) -> dict:
    """What a resumed run must share with the run that wrote its checkpoint: the model's class and the
    names, shapes and dtypes of its parameters and buffers, the values of its integer buffers (token ids, index
    tables), a hash of the train/valid interactions and features, and the TrainConfig fields that change the
    computation (effective weight decay and lr schedule included)."""
    data = hashlib.sha256(f"{dataset.n_users}|{dataset.n_items};".encode())
    for m in (dataset.train, dataset.valid):
        data.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
        data.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
    for name in sorted(dataset.features):
        data.update(name.encode())
        data.update(np.ascontiguousarray(dataset.features[name]).tobytes())
    trainer = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE_CHANGES}
    trainer.update(settings)
    return {"model": type(model).__name__, "model_layout": model_layout(model),
            "data": data.hexdigest()[:16], "trainer": json.loads(json.dumps(trainer, default=str))}


def model_layout(model) -> str:
    """16 hex digits over the names, shapes and dtypes of the model's parameters and buffers and the values of its
    integer buffers (token ids, index tables): two models with one layout can load each other's weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype};".encode())
    for name, t in sorted(model.named_buffers()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|{t.layout};".encode())
        if t.layout == torch.strided and not (t.is_floating_point() or t.is_complex()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_bytes(state: dict, description: dict) -> bytes:
    """A checkpoint file: a magic line, a JSON header (the run description, its fingerprint, the SHA-256 of
    fingerprint and payload, the payload's length), then the ``torch.save`` payload."""
    payload, fp = _state_bytes(state), fingerprint(description)
    header = {"fingerprint": fp, "description": description,
              "sha256": hashlib.sha256(fp.encode() + payload).hexdigest(), "payload_bytes": len(payload)}
    return CHECKPOINT_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def read_checkpoint(path: Path, description: dict, device) -> dict:
    """The state saved in checkpoint ``path`` for a run described by ``description`` (:func:`run_description`);
    a :class:`CheckpointError` names the file and the fix when it is damaged, not a motor checkpoint, or written
    by a run with another configuration."""
    fix = f"Fix: delete {path} to start this run from scratch, or pass resume=False (the file is then overwritten)."
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}). {fix}") from exc
    if not raw.startswith(CHECKPOINT_MAGIC):
        raise CheckpointError(f"checkpoint {path} is not a motor checkpoint of this version (no header line), so "
                              f"nothing says which run wrote it. {fix}")
    try:
        end = raw.index(b"\n", len(CHECKPOINT_MAGIC))
        header = json.loads(raw[len(CHECKPOINT_MAGIC):end])
        payload = raw[end + 1:]
        intact = (len(payload) == header["payload_bytes"]
                  and hashlib.sha256(header["fingerprint"].encode() + payload).hexdigest() == header["sha256"])
    except (ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        raise CheckpointError(f"checkpoint {path} is damaged (truncated or changed: its checksum does not match). "
                              f"{fix}")
    if header.get("fingerprint") != fingerprint(description):
        saved = header.get("description") or {}
        diff = [k for k in description if k != "trainer" and saved.get(k) != description[k]]
        diff += [f"trainer.{k}" for k in description["trainer"]
                 if (saved.get("trainer") or {}).get(k) != description["trainer"][k]]
        raise CheckpointError(f"checkpoint {path} was written by a run with another configuration (differs in: "
                              f"{', '.join(diff) or 'the run description'}; saved model {saved.get('model')}, this "
                              f"run {description['model']}). {fix}")
    try:
        state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}). {fix}") from exc
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing} that a resume needs (written by "
                              f"another program or an incompatible motor). {fix}")
    return state


# what every checkpoint holds (train writes them all; "cuda_rng" may be None)
_CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "history", "best", "np_rng", "edge_rng", "torch_rng")


def train(model, dataset, config: TrainConfig | None = None, callbacks: list[Callable] = (),
          **overrides) -> TrainResult:
    """Train ``model`` on ``dataset.train``; select on ``dataset.valid``. Returns history and the best epoch.

    ``callbacks``: functions ``f(epoch, record)`` called after each epoch's checkpoint (e.g. live plots).
    """
    cfg = replace(config or TrainConfig(), **overrides)
    keep_freed_memory()
    device = torch.device(cfg.device)
    model.to(device)
    if not getattr(model, "trainable", True):
        res = evaluate(model, dataset, "valid", cfg.ks, buckets=None, device=device)
        return TrainResult(pd.DataFrame(), 0, res.metrics, "not_trainable", 0.0)

    check_negatives_exist(dataset)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    settings = trainer_settings(model, cfg.weight_decay, cfg.lr_schedule)
    opt = make_optimizer(model, cfg.lr, settings["weight_decay"])
    coo = dataset.train.tocoo()
    users_all, items_all = coo.row.astype(np.int64), coo.col.astype(np.int64)
    keys = train_keys(dataset.train)
    history: list[dict] = []
    best = {"metric": -1.0, "epoch": -1, "state": None, "valid": {}, "bad": 0}
    start = 0
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    description = run_description(model, dataset, cfg, settings) if ckpt is not None else None
    if cfg.resume and ckpt is None:
        raise CheckpointError("resume=True needs checkpoint=<file> (the checkpoint to continue from).")
    if cfg.resume and not ckpt.is_file():
        raise CheckpointError(f"checkpoint {ckpt} does not exist, so there is nothing to resume. Fix: check the "
                              "path, or pass resume=False to start a new run that writes it.")
    if cfg.resume:
        state = read_checkpoint(ckpt, description, device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["np_rng"]
        gen.set_state(state["edge_rng"].cpu())  # generator states are CPU byte tensors; map_location moved them
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and device.type == "cuda":  # e.g. BM3's dropout views, drawn there
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        history, best, start = state["history"], state["best"], state["epoch"] + 1

    bar = tqdm(total=cfg.epochs, initial=start, disable=not cfg.progress, desc=type(model).__name__, leave=False)
    t_start = time.perf_counter()
    stopped = "max_epochs"
    epoch = start - 1
    for epoch in range(start, cfg.epochs):
        if best["bad"] >= cfg.patience:
            stopped = "early_stopping"
            break
        t0 = time.perf_counter()
        if settings["lr_schedule"] is not None:
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(cfg.lr, settings["lr_schedule"], epoch)
        model.train()
        model.on_epoch_start(gen)
        perm = rng.permutation(len(users_all))
        u_np, p_np = users_all[perm], items_all[perm]
        n_np = sample_negatives(u_np, dataset.n_items, keys, rng)
        u, p, n = (torch.from_numpy(a).to(device) for a in (u_np, p_np, n_np))
        total, batches = 0.0, 0
        for s in range(0, len(u), cfg.batch_size):
            loss = model.loss(u[s:s + cfg.batch_size], p[s:s + cfg.batch_size], n[s:s + cfg.batch_size])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{type(model).__name__}: loss became {loss.item()} at epoch {epoch} batch {batches}; "
                    f"try a lower learning rate (lr={cfg.lr}) or a larger regularisation weight.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        t_train = time.perf_counter() - t0
        record = {"epoch": epoch, "loss": total / max(batches, 1), "train_seconds": t_train}
        if settings["lr_schedule"] is not None:
            record["lr"] = opt.param_groups[0]["lr"]
        if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
            res = evaluate(model, dataset, "valid", cfg.ks, buckets=None, batch_users=cfg.eval_batch_users,
                           device=device)
            record.update({f"valid_{k}": v for k, v in res.metrics.items() if k != "n_users"})
            record["eval_seconds"] = res.seconds
            score = res.metrics.get(cfg.valid_metric, 0.0)
            if score > best["metric"]:
                best = {"metric": score, "epoch": epoch, "valid": dict(res.metrics), "bad": 0,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            else:
                best["bad"] += 1
        history.append(record)
        if ckpt is not None:
            atomic_write_bytes(ckpt, checkpoint_bytes({
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "history": history,
                "best": best, "np_rng": rng.bit_generator.state, "edge_rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}, description))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", **{cfg.valid_metric: f"{best['metric']:.4f}"})
        for cb in callbacks:
            cb(epoch, record)
    else:
        if best["bad"] >= cfg.patience and cfg.epochs > start:
            stopped = "early_stopping"
    if bar is not None:
        bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return TrainResult(pd.DataFrame(history), best["epoch"], best["valid"], stopped,
                       time.perf_counter() - t_start, epochs_run=epoch + 1, extra={"trainer": settings})
