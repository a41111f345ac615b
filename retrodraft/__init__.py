"""retrodraft: lossless, model-free tree speculative decoding for Hugging Face causal LMs."""
