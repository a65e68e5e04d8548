"""Layer rules: only integration/vllm imports vllm, only ops/ imports triton, and core/ plus the
Arrow log import neither torch nor vllm, not even transitively."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "poodle_vllm"


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def test_only_integration_imports_vllm() -> None:
    offenders = [
        str(p.relative_to(PKG))
        for p in _modules()
        if "vllm" in _imported_roots(p) and "integration/vllm" not in p.as_posix()
    ]
    assert offenders == []


def test_only_ops_imports_triton() -> None:
    offenders = [
        str(p.relative_to(PKG))
        for p in _modules()
        if "triton" in _imported_roots(p) and "/ops/" not in p.as_posix()
    ]
    assert offenders == []


def test_core_and_arrowlog_import_no_torch_or_vllm_transitively() -> None:
    modules = [
        "poodle_vllm." + ".".join(p.relative_to(PKG).with_suffix("").parts)
        for p in _modules()
        if p.relative_to(PKG).parts[0] in ("core", "arrowlog") and p.name != "__main__.py"
    ]
    modules += ["poodle_vllm.types", "poodle_vllm.config", "poodle_vllm.paths"]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
        "print(json.dumps(sorted(k for k in ('torch', 'vllm', 'transformers', 'triton') if k in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_package_import_is_light() -> None:
    code = "import sys, poodle_vllm, poodle_vllm.cli.main as m; m.build_parser(); print('torch' in sys.modules, 'vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
