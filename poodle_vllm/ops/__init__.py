"""Fused ops for the surrogate runtime and model search.

``reference`` holds the pure-torch versions (ground truth and CPU fallback);
``triton/`` holds the kernels (``triton/kernels/``, jit only) and their wrappers (the only
place in Poodle that imports triton); ``dispatch`` picks between them per call:

    from poodle_vllm.ops import dispatch
    logits, probs = dispatch.pool_classify(hidden, mask, head_w, head_b, temperature)
    emb = dispatch.embedding_layernorm(ids, word, pos, typ, ln_w, ln_b, token_type_ids)
    dist, idx = dispatch.knn_topk(feats_mnd, k)            # M candidates in one launch
    acc = dispatch.knn_proxy_scores(feats_mnd, labels, k)  # [M]
    ev = dispatch.logme_scores(feats_mnd, labels)          # [M]

Importing this package imports nothing heavy.
"""
