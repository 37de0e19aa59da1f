"""Model compression: weight-only quantization (round-to-nearest, GPTQ, AWQ), quantization-aware
training, pruning and low-rank factorisation, and the `python -m llm_jax.compress` CLI.

Quantized kernels are llm_jax.peft.quantize.QuantizedArray leaves in the params tree (the same
concept as QLoRA's frozen base); every dense layer dequantizes its own kernel.
"""
