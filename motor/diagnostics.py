"""Training diagnostics on torch models: item-vector spread (collapse), a hybrid's ID/token norm ratio by popularity
bucket, trainer callbacks (spread, train recall) and MGCN's gate statistics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .evaluate import DEFAULT_BUCKETS, bucket_labels, item_buckets, metrics_from_topk


def item_vector_spread(vectors) -> float:
    """Mean cosine similarity over all pairs of distinct items (1: every vector points the same way, i.e. collapse;
    about 0 for unrelated directions). ``vectors``: (n, d) array or tensor, or a backbone (its final item
    vectors, :func:`model_item_vectors`). Exact, in O(n d): sum_{i != j} cos_ij = |sum_i v_i/|v_i||^2 - n."""
    if isinstance(vectors, torch.nn.Module):
        vectors = model_item_vectors(vectors)
    v = torch.as_tensor(vectors).detach().double()
    n = len(v)
    if n < 2:
        return float("nan")
    unit = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = unit.sum(0)
    return float((s @ s - (unit * unit).sum()) / (n * (n - 1)))


def model_item_vectors(model, which: str = "final"):
    """(n_items, d) item vectors of a backbone: ``"final"`` as scored (``embeddings()``), ``"repr"`` the item
    representation's output (ID rows or token-derived vectors), in eval mode without gradients."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.embeddings()[1].detach() if which == "final" else model.item_repr().detach()
    finally:
        model.train(was)


def id_token_norms(model, item_popularity: np.ndarray, edges=None) -> pd.DataFrame:
    """How much a hybrid item representation (``"ms+id"``, ``"ms+gate"``: one with ``parts()``) leans on its ID
    part, per popularity bucket of :func:`motor.evaluate.item_buckets` (train interactions, ``item_popularity``
    (n_items,)). ``model``: a backbone or the representation itself. One row per bucket: ``n_items``, median norm
    of the token part and of the ID part, and the median of the per-item ratio ``|ID part| / |token part|``
    (0 = the model is the token model for those items)."""
    rep = model.item_repr if isinstance(getattr(model, "item_repr", None), torch.nn.Module) else model
    if not hasattr(rep, "parts"):
        raise ValueError(f"{type(rep).__name__} has no ID part (parts()); id_token_norms reads a hybrid "
                         "representation such as item_repr='ms+id' or 'ms+gate'")
    tokens, ids = (t.float().norm(dim=1).cpu().numpy() for t in rep.parts())
    pop = np.asarray(item_popularity)
    if pop.shape != tokens.shape:
        raise ValueError(f"item_popularity has shape {pop.shape}; the representation has {len(tokens)} items")
    edges = DEFAULT_BUCKETS if edges is None else edges
    bucket = item_buckets(pop, edges)
    ratio = ids / np.maximum(tokens, 1e-12)
    rows = []
    for b, label in enumerate(bucket_labels(edges)):
        sel = bucket == b
        rows.append({"bucket": label, "n_items": int(sel.sum()),
                     "token_norm": float(np.median(tokens[sel])) if sel.any() else np.nan,
                     "id_norm": float(np.median(ids[sel])) if sel.any() else np.nan,
                     "id_token_ratio": float(np.median(ratio[sel])) if sel.any() else np.nan})
    return pd.DataFrame(rows).set_index("bucket")


def spread_callback(model, which=("final", "repr"), every: int = 1):
    """Trainer callback (``train(..., callbacks=[...])`` / ``motor.run(callbacks=...)``) that adds the item vectors'
    :func:`item_vector_spread` to each ``every``-th epoch's history row as ``item_cosine_<which>``."""
    kinds = (which,) if isinstance(which, str) else tuple(which)

    def callback(epoch: int, record: dict) -> None:
        if epoch % every == 0:
            for w in kinds:
                record[f"item_cosine_{w}"] = item_vector_spread(model_item_vectors(model, w))

    return callback


def train_recall_callback(model, dataset, k: int = 20, n_users: int = 500, seed: int = 0, every: int = 1):
    """Trainer callback that adds ``train_recall@k`` to the history: Recall@k of a fixed random sample of users'
    *train* items, nothing masked. Next to ``valid_recall@k`` it shows fitting: train recall climbing while valid
    recall falls is over-fitting; both flat and low is under-training."""
    rng = np.random.default_rng(seed)
    has = np.flatnonzero(np.diff(dataset.train.indptr) > 0)
    users = np.sort(rng.choice(has, size=min(n_users, len(has)), replace=False))
    held = dataset.train

    def callback(epoch: int, record: dict) -> None:
        if epoch % every:
            return
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                u, i = model.embeddings()
                dev = u.device
                scores = u[torch.as_tensor(users, device=dev)] @ i.T
                top = scores.topk(min(k, i.shape[0]), dim=1).indices.cpu().numpy()
        finally:
            model.train(was)
        record[f"train_recall@{k}"] = float(metrics_from_topk(top, held, users, (k,))[f"recall@{k}"].mean())

    return callback


def mgcn_gate_stats(model) -> pd.DataFrame:
    """What MGCN's gates do, from one forward pass of a (trained) MGCN model, per modality:

    * ``purifier``: sigmoid(W_g (W_m x_m) + b_g), the gate on the item representation (one value per item and dim);
    * ``preference``: sigmoid(W_p E^id + b), the gate on each modality-specific part (users and items);
    * ``beta``: the fuser's attention weight of the modality (users and items);

    with mean, std, the share of values below 0.1 and above 0.9; plus rows ``norm`` with the mean row norms of the
    item representation, of the user-item view E^id and of the side view (items), whose ratio says how much the
    item-item views contribute to the final vectors."""
    captured: dict[str, list] = {"purifier": [], "preference": [], "query": []}
    hooks = []
    for m in model.modalities:
        hooks.append(model.purifier_gates[m].register_forward_hook(
            lambda mod, inp, out, m=m: captured["purifier"].append((m, out.detach()))))
        hooks.append(model.preference_gates[m].register_forward_hook(
            lambda mod, inp, out, m=m: captured["preference"].append((m, out.detach()))))
    hooks.append(model.query_common.register_forward_hook(
        lambda mod, inp, out: captured["query"].append(out.detach())))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            content, side = model.forward_views()
            items = model.item_repr().detach()  # an ID table's forward is its Parameter itself
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    beta = torch.softmax(torch.cat(captured["query"], dim=1), dim=1)

    def row(kind, m, x):
        x = x.float()
        return {"what": kind, "modality": m, "mean": float(x.mean()), "std": float(x.std()),
                "share_below_0.1": float((x < 0.1).float().mean()), "share_above_0.9": float((x > 0.9).float().mean())}

    rows = [row("purifier", m, x) for m, x in captured["purifier"]]
    rows += [row("preference", m, x) for m, x in captured["preference"]]
    rows += [row("beta", m, beta[:, j]) for j, m in enumerate(model.modalities)]
    n_u = model.n_users
    for name, x in (("item_repr", items), ("content_items", content[n_u:]), ("side_items", side[n_u:]),
                    ("content_users", content[:n_u]), ("side_users", side[:n_u])):
        rows.append({"what": "norm", "modality": name, "mean": float(x.norm(dim=1).mean()),
                     "std": float(x.norm(dim=1).std())})
    return pd.DataFrame(rows)
