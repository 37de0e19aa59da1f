"""Parameter-efficient fine-tuning around the models: merging, adapter files, quantized bases,
Hugging Face peft adapters. The layers themselves live in llm_jax/models."""
