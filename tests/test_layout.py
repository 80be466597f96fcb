"""The shape of the code: no import cycle inside the packages, no module using another's private names,
the stages callable one by one as README.md shows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("wanda_engine", "kernels")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module imported at module level, the names taken from it) for the package's own modules."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if target in modules:
                found.append((target, names))
            found += [(f"{target}.{n}", []) for n in names if f"{target}.{n}" in modules]
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name in modules]
    return [(target, names) for target, names in found if target != name]


def test_no_import_cycle_inside_the_packages():
    modules = _modules()
    edges = {name: {target for target, _ in _imports(name, path, modules)} for name, path in modules.items()}
    state: dict[str, str] = {}
    cycle: list[str] = []

    def visit(name: str, trail: list[str]) -> bool:
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                cycle.extend(trail[trail.index(target):] + [name, target] if target in trail else [name, target])
                return True
            if target not in state and visit(target, trail + [name]):
                return True
        state[name] = "done"
        return False

    for name in sorted(modules):
        if name not in state and visit(name, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    offences = [
        f"{name} imports {target}.{n}"
        for name, path in modules.items()
        for target, names in _imports(name, path, modules)
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not offences, offences


def test_readme_python_api_example_runs(tiny_model_dir, calibration_text_file):
    """The stages, one by one, as README.md shows them (on a tiny model instead of path/to/model)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API: the pipeline's stages", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    code = code.replace("path/to/model", tiny_model_dir).replace("calibration.txt", calibration_text_file)
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    model = namespace["loaded"].model
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head)
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head)
    assert zeros / total == pytest.approx(0.5, abs=1e-3)
    assert namespace["pruned"].outcome.actual_sparsity == pytest.approx(zeros / total)


def test_stages_refuse_a_streamed_model_without_a_run(tiny_model_dir, calibration_text_file):
    """A streamed model is written block by block into a run's partial output as it is pruned: pruning
    it without a run would throw the pruned blocks away."""
    from wanda_engine.config import PruneConfig
    from wanda_engine.pipeline import calibrate, capture_calibration, load, make_plan, prune

    plan = make_plan(PruneConfig(model=tiny_model_dir, calibration_dataset=calibration_text_file, eval="none",
                                 nsamples=2, seqlen=32))
    loaded = load(plan)
    assert loaded.streamed
    with pytest.raises(ValueError, match="pass run="):
        prune(plan, loaded, capture_calibration(plan, loaded, calibrate(plan, loaded, 32)))
