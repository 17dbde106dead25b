"""The LLaMA-VID network: config, EVA vision tower, Q-Former, visual tokens, the LLM, loading and saving.

Read in data-path order: ``config`` -> ``eva`` (pixels to patch features) -> ``qformer`` (features and
the question to query outputs) -> ``visual_tokens`` (context and content tokens per frame) ->
``modeling`` (the whole model and the splice into the LLM's embeddings) -> ``loading``.
``quantize_vision`` / ``quantize_llm`` change precision after loading; ``tiny`` writes small
checkpoints in the released layout for tests.
"""
