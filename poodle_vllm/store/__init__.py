"""The model store: candidate encoders (HF folders), their catalog, fingerprints and the zoo.

* :mod:`.catalog` - ``Catalog`` / ``ModelEntry`` (JSON, atomic writes, lineage);
* :mod:`.importer` - ``add_model``, ``import_prepared``, ``update_fingerprints``, ``remeasure_latency``;
* :mod:`.fingerprint` - probe-set fingerprints and a faiss index (similar models, clusters);
* :mod:`.zoo` - ``build_zoo`` (task-tuned, truncated, random control) and ``build_variant_store``;
* :mod:`.encoder` - loading, pooled hidden states, latency, ``create_tiny_encoder`` for tests.
"""
