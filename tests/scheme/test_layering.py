"""The package's layering, read from the source: agents/, storage/ and envs/ import nothing from
scheme/ or launch/; scheme/ imports no algorithm (the engine reads what algorithms declare)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALGORITHM_MODULES = {"ppo", "sac", "sac_discrete", "td3", "ddpg", "dqn", "pg", "a2c", "recurrent", "recurrent_ppo",
                     "recurrent_pg", "recurrent_a2c", "recurrent_impala", "recurrent_appo", "impala", "appo"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", ["agents", "storage", "envs"])
def test_lower_layers_import_nothing_from_scheme_or_launch(folder: str) -> None:
    files = sorted((ROOT / folder).glob("*.py"))
    assert files
    for path in files:
        bad = {m for m in _imports(path) if m.startswith(("colonyrl.scheme", "colonyrl.launch"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_engine_imports_no_algorithm() -> None:
    for path in sorted((ROOT / "scheme").glob("*.py")):
        bad = {m for m in _imports(path) if m.startswith("colonyrl.agents.") and m.split(".")[2] in ALGORITHM_MODULES}
        assert not bad, f"scheme/{path.name} imports {sorted(bad)}"


def test_the_config_base_is_a_leaf() -> None:
    assert not {m for m in _imports(ROOT / "config.py") if m.startswith("colonyrl")}
