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


#: Issue 9: the data path, env.step -> optimizer.step, reads in at most this many lines of its files.
DATA_PATH_MAX_LINES = 1500


def test_the_hop_list_names_real_functions_and_its_files_read_in_at_most_1500_lines() -> None:
    """scheme/__init__.py's hop list (``file :: Class.method``): every file and function it names
    exists, there are at most 6 files, and together they are at most 1,500 lines."""
    import importlib
    import re

    doc = importlib.import_module("colonyrl.scheme").__doc__
    hops = re.findall(r"^\d\. ``(\S+\.py) :: (\S+)``", doc, flags=re.MULTILINE)
    assert len(hops) == 6, hops
    for path, qualname in hops:
        target = importlib.import_module("colonyrl." + path[:-3].replace("/", "."))
        for part in qualname.split("."):
            target = getattr(target, part)  # AttributeError: the hop list names what is not there
        assert callable(target), (path, qualname)
    files = sorted({path for path, _ in hops})
    lines = {path: len((ROOT / path).read_text().splitlines()) for path in files}
    assert len(files) <= 6 and sum(lines.values()) <= DATA_PATH_MAX_LINES, lines
