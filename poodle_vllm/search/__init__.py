"""Model search: cached feature extraction, proxy scorers, successive halving.

Entry point: :func:`poodle_vllm.search.search.search_models` with a
:class:`poodle_vllm.search.config.SearchConfig`; it returns a ``SearchResult``.
"""
