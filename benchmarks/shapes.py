"""Real model shapes for benchmarks, randomly initialized: speed and memory do not depend on the weights."""

SHAPES = {
    "gemma-2b": dict(
        model_type="gemma",
        vocab_size=256000,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
    ),
    "gemma2-2b": dict(
        model_type="gemma2",
        vocab_size=256000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        query_pre_attn_scalar=256,
    ),
    "llama-1b": dict(
        model_type="llama",
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
    ),
    # Gemma's 256k vocabulary on a small backbone: the LM head dominates, as it does memory at any size.
    # Small enough for a CPU run of bench_trainer.py.
    "gemma-256k-small": dict(
        model_type="gemma",
        vocab_size=256000,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=128,
    ),
    # A smoke-test size for the scripts themselves on a CPU.
    "tiny": dict(
        model_type="llama",
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
    ),
}
