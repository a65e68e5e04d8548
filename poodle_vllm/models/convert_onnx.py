"""Convert the ONNX paraphrase-MiniLM-L3-v2 (sentence-transformers export) into a PyTorch BertModel.

The export keeps the BERT parameter names for embeddings, biases and LayerNorms, but stores
each Linear weight as an anonymous ``onnx::MatMul_N`` initializer. Each such MatMul is followed
by the ``Add`` of its bias, so the weight takes the bias's name (``.bias`` -> ``.weight``) and
is transposed (ONNX computes ``x @ W``, torch ``x @ W.T``). The result is checked numerically
against the ONNX graph itself (onnxruntime when installed, else ``onnx.reference``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_PREFIX = "model.0.auto_model."
# Output of the export that holds the mean-pooled (not normalised) sentence embedding.
_POOLED_OUTPUT = "461"
PARITY_TOLERANCE = 1e-4
_NUM_HEADS = 12  # paraphrase-MiniLM-L3-v2; the parity check catches a wrong value
_MAX_SEQ_LENGTH = 128  # the sentence-transformers max_seq_length of paraphrase-MiniLM-L3-v2


def onnx_state_dict(onnx_path: Path) -> tuple[dict[str, Any], float]:
    """BERT state dict (numpy arrays) rebuilt from the ONNX initializers, and the LayerNorm epsilon."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {name[len(_PREFIX) :]: arr for name, arr in inits.items() if name.startswith(_PREFIX)}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith(_PREFIX):
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        bias = [i for n in adds for i in n.input if i.startswith(_PREFIX) and i.endswith(".bias")]
        if len(bias) != 1:
            raise ValueError(f"cannot name the weight of MatMul {node.name}: biases {bias}")
        state[bias[0][len(_PREFIX) : -len(".bias")] + ".weight"] = inits[node.input[1]].T.copy()
    eps = [
        a.f
        for n in graph.node
        if n.op_type == "LayerNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    ]
    return state, (eps[0] if eps else 1e-12)


def _run_onnx(onnx_path: Path, feeds: dict[str, Any]) -> tuple[Any, str]:
    """The pooled output of the ONNX graph for ``feeds``, and which runtime computed it."""
    try:
        import onnxruntime as ort
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        evaluator: Any = ReferenceEvaluator(onnx.load(str(onnx_path)))
        return evaluator.run([_POOLED_OUTPUT], feeds)[0], "onnx.reference"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    return session.run([_POOLED_OUTPUT], feeds)[0], f"onnxruntime {ort.__version__}"


def convert_onnx_to_bert(onnx_path: Path, tokenizer_files: Sequence[Path], out: Path) -> dict[str, Any]:
    """Write a BertModel HF folder at ``out`` from ``onnx_path``; return the parity check result."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from poodle_vllm.models.encoders import CHECK_SENTENCES, write_sentence_transformers_files

    state, eps = onnx_state_dict(onnx_path)
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    config = BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=layers,
        num_attention_heads=_NUM_HEADS,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=float(eps),
        hidden_act="gelu",
        architectures=["BertModel"],
    )
    model = BertModel(config, add_pooling_layer=True).eval()
    tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
    # NOTE: the export has no BERT pooler (sentence-transformers mean-pools). A randomly
    # initialised pooler would make ``pooler_output`` differ between loads, so store a fixed
    # one: tanh(CLS) (identity weight, zero bias). Mean pooling never uses it.
    tensors["pooler.dense.weight"] = torch.eye(int(hidden))
    tensors["pooler.dense.bias"] = torch.zeros(int(hidden))
    result = model.load_state_dict(tensors, strict=False)
    # position_ids is a buffer some transformers versions keep; nothing else may be missing.
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"ONNX -> BERT mapping is incomplete: missing={missing} unexpected={result.unexpected_keys}"
        )
    model.save_pretrained(out, safe_serialization=True)
    for f in tokenizer_files:
        shutil.copyfile(f, out / f.name)
    write_sentence_transformers_files(out, int(hidden), _MAX_SEQ_LENGTH)

    # Parity: mean pooling of the torch model against the ONNX graph's pooled output.
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(list(CHECK_SENTENCES), padding=True, return_tensors="np")
    feeds = {
        "input_ids": batch["input_ids"].astype(np.int64),
        "attention_mask": batch["attention_mask"].astype(np.int64),
    }
    expected, runtime = _run_onnx(onnx_path, feeds)
    with torch.inference_mode():
        hs = model(
            input_ids=torch.from_numpy(feeds["input_ids"]),
            attention_mask=torch.from_numpy(feeds["attention_mask"]),
        ).last_hidden_state
    mask = torch.from_numpy(feeds["attention_mask"]).unsqueeze(-1).float()
    pooled = ((hs * mask).sum(1) / mask.sum(1)).numpy()
    max_abs = float(np.abs(pooled - expected).max())
    if not max_abs < PARITY_TOLERANCE:
        raise RuntimeError(
            f"converted BERT differs from the ONNX model by {max_abs:.2e} (> {PARITY_TOLERANCE})"
        )
    return {
        "runtime": runtime,
        "max_abs_diff": max_abs,
        "tolerance": PARITY_TOLERANCE,
        "sentences": len(CHECK_SENTENCES),
        "pooler": "identity weight, zero bias (not in the ONNX export)",
    }
