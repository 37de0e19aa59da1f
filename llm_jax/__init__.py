"""llm_jax: encoder, decoder and encoder-decoder language models in JAX/Flax."""


def __getattr__(name):
  # `llm_jax.embed(model, params, texts, ...)` without importing jax at `import llm_jax`.
  if name == "embed":
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module("llm_jax.embed")
  raise AttributeError(f"module 'llm_jax' has no attribute {name!r}")
