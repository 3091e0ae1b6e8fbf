"""The wheel holds one top-level package, `tritune`, with every subpackage in it."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"tritune_root": "tritune", "search_space": "tritune.search_space", "kernels": "tritune.kernels",
           "db": "tritune.db", "tuner": "tritune.tuner", "cost_model": "tritune.cost_model",
           "llm_advisor": "tritune.llm_advisor", "bench": "tritune.bench"}


def _packages_in_tree():
    out = set()
    for folder, name in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            out.add(".".join([name, *rel.parts]) if rel.parts else name)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True)
    [whl] = out.glob("tritune-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_has_one_top_level_name_and_every_subpackage(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"tritune"}
    packaged = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("__init__.py")}
    missing = _packages_in_tree() - packaged
    assert not missing, f"folders missing from pyproject's package list: {sorted(missing)}"
    assert "tritune/data/builtin_tuned.json" in names
    # import every subpackage from the unpacked wheel, not from the repository or an editable install
    site = tmp_path / "site"
    code = (
        "import importlib, sys\n"
        f"mods = {sorted(packaged)!r}\n"
        "for m in mods:\n"
        "    mod = importlib.import_module(m)\n"
        f"    assert mod.__file__.startswith({str(site)!r}), (m, mod.__file__)\n"
        "print(len(mods))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(site), "TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(packaged)


def test_no_bare_imports_of_repository_folders():
    """`import tuner` from the repo root would load a second copy of a module: always `tritune.tuner`."""
    offenders = []
    for folder in [*FOLDERS, "tests", "scripts"]:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in FOLDERS]
    assert not offenders, offenders
