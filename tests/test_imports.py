"""Imports are cheap and inert: ``import motor`` (and the modules a run imports) load no faiss, start no
subprocess, leave ``os.environ`` and the warning filters as they were. Each case runs in a fresh interpreter; the
same child then does what should have those effects (load faiss, read the provenance), so the probes are shown to
see them."""
import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = r"""
import json, os, subprocess, sys, warnings
started = []


class _Recording(subprocess.Popen):
    def __init__(self, args, *a, **k):
        started.append(str(args))
        super().__init__(args, *a, **k)


subprocess.Popen = _Recording  # before any motor import: every subprocess motor starts goes through it
for name in sys.argv[2].split(","):  # third-party libraries first: their own warning filters are theirs
    __import__(name)
env, filters = dict(os.environ), list(warnings.filters)
for name in sys.argv[1].split(","):
    __import__(name)
out = {"faiss": "faiss" in sys.modules, "torch": "torch" in sys.modules, "started": list(started),
       "env_changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
       "filters_changed": warnings.filters != filters}
import motor.tokenizer, motor.runs  # the effects, when they are due
motor.tokenizer.load_faiss()
motor.runs.provenance()
out["then_faiss"] = "faiss" in sys.modules
out["then_started"] = len(started)
out["then_env_changed"] = any(env.get(k) != os.environ.get(k) for k in set(env) | set(os.environ))
print(json.dumps(out))
"""


_LIBRARIES = "numpy,scipy.sparse,pandas"


def _probe(modules: str, policy: str | None = "ACTIVE", libraries: str = _LIBRARIES) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy  # faiss's loader sets PASSIVE while faiss loads and must put this back
    out = subprocess.run([sys.executable, "-c", _PROBE, modules, libraries], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("policy", ["ACTIVE", None])
def test_import_motor_is_inert(policy):
    seen = _probe("motor", policy)
    assert seen["faiss"] is False
    assert seen["started"] == []
    assert seen["env_changed"] == []
    assert seen["filters_changed"] is False
    # the probe sees the effects when they are due: faiss loads on first use, git runs on the first save
    assert seen["then_faiss"] is True and seen["then_env_changed"] is False
    if shutil.which("git"):
        assert seen["then_started"] > 0


def test_the_modules_a_run_imports_are_inert():
    """experiment/backbones/runs import torch (they need it) but no faiss, no subprocess, no global warning
    filter (GRCN's CSR warning is silenced where its tensors are made, not for the whole process)."""
    seen = _probe("motor.experiment,motor.backbones,motor.runs,motor.item_repr,motor.train",
                  libraries=_LIBRARIES + ",torch")
    assert seen["faiss"] is False and seen["started"] == [] and seen["env_changed"] == []
    assert seen["filters_changed"] is False


def test_import_motor_runs_loads_no_torch():
    seen = _probe("motor.runs")
    assert seen["torch"] is False and seen["started"] == []


# ------------------------------------------------------------------------------------------------ layering (issue 25)

MOTOR = Path(__file__).resolve().parent.parent / "motor"
# bottom to top: a module imports only modules of its own layer or below (issue 25's target layout)
LAYERS = [
    {"defaults", "cache", "perf", "kernels", "sparse", "data", "synthetic", "runs", "analysis", "findings",
     "neighbours"},                                               # data, registry, tables, sentences
    {"tokenizer", "tcn", "item_repr", "backbones"},               # tokens, item representations, backbones
    {"evaluate", "train", "diagnostics"},                         # evaluation, training, training diagnostics
    {"config"},                                                   # RunConfig
    {"experiment"},                                               # one run
    {"tune", "recommend", "studies"},                             # searches, using runs, the notebooks' runs
    {"params", "notebook", "plots", "widgets", "report"},         # the notebook layer
    {"cli", "__main__", "__init__"},                              # command line and the package facade
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(MOTOR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _motor_imports(path: Path) -> set[str]:
    """The motor modules ``path`` imports anywhere in it (top level or inside functions), resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "motor"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "motor":
                continue
            for alias in node.names:  # ``from . import runs``: the submodule, when there is one
                sub = f"{target}.{alias.name}"
                out.add(sub if (MOTOR.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
                        or (MOTOR.parent / sub.replace(".", "/") / "__init__.py").is_file() else target)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _motor_imports(p) for p in sorted(MOTOR.rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    key = "__init__" if parts == ["motor"] else parts[1]
    return next(i for i, layer in enumerate(LAYERS) if key in layer)


def test_every_module_has_a_layer():
    assert all(_layer(m) >= 0 for m in _graph())  # a new module must be placed in LAYERS


def test_motor_imports_have_no_cycle():
    graph = {m: {t for t in targets if t != "motor"} for m, targets in _graph().items()}  # the parent is implicit
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [m, t]) if t in path
                            else f"import cycle: {m} -> {t}")
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_imports_flow_downwards():
    upward = [f"{m} ({_layer(m)}) imports {t} ({_layer(t)})" for m, targets in _graph().items() for t in targets
              if t != "motor" and _layer(t) > _layer(m)]
    assert upward == []


def test_lazy_map_covers_every_heavy_name():
    """Every public name of ``motor`` is bound at import without torch/faiss/ray, or listed in the lazy map; each
    resolves; the functions named like their module stay functions after the module is imported."""
    code = ("import json, sys, motor; eager = [n for n in motor.__all__ if n in vars(motor)]; "
            "lazy = sorted(motor._LAZY); heavy = [m for m in ('torch', 'faiss', 'ray') if m in sys.modules]; "
            "missing = [n for n in motor.__all__ if n not in vars(motor) and n not in motor._LAZY]; "
            "import motor.tune, motor.recommend, motor.synthetic; "
            "ok = all(getattr(motor, n) is not None for n in motor.__all__); "
            "funcs = [callable(motor.tune), callable(motor.recommend), callable(motor.synthetic)]; "
            "print(json.dumps({'heavy': heavy, 'missing': missing, 'ok': ok, 'funcs': funcs}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=MOTOR.parent).stdout.strip().splitlines()[-1])
    assert out == {"heavy": [], "missing": [], "ok": True, "funcs": [True, True, True]}


def test_import_motor_loads_no_torch_faiss_or_ray():
    seen = _probe("motor")
    assert seen["torch"] is False and seen["faiss"] is False


@pytest.mark.parametrize("module, moved", [("analysis", ["umap_2d", "learning_curves", "describe_sparsity",
                                                          "mgcn_gate_stats", "sparsity_sweep"]),
                                           ("studies", ["Finding", "describe_run", "bucket_means", "case_study",
                                                        "COLD"])])
def test_names_moved_by_the_split_still_resolve(module, moved):
    mod = importlib.import_module(f"motor.{module}")
    for name in moved:
        assert getattr(mod, name) is getattr(importlib.import_module(f"motor.{mod._MOVED[name]}"), name)
