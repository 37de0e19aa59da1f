"""The config sections of compression: `quantization`, `distill` and `pruning`."""

import ml_collections


def default_quantization_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # Stored post-training weights of a compressed workdir (written by llm_jax.compress):
      weights="none",        # 'none' | 'int8' | 'int4'
      method="rtn",          # 'rtn' (round to nearest) | 'gptq' | 'awq'
      group_size=0,          # contracted values per scale; 0 = one scale per output channel
      targets=".",           # regex searched in dense layer paths ('decoder/layers_0/mlp/wi')
      # Quantization-aware training: the train step fake-quantizes the targeted kernels with a
      # straight-through gradient.
      qat="none",            # 'none' | 'int8' | 'int4'
      qat_group_size=0,
      qat_targets=".",
  ))


def default_distill_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      teacher="",            # 'workdir:DIR' | 'hf:FOLDER' (task.name='distill')
      temperature=2.0,
      alpha=0.5,             # weight of the KD term; 1 - alpha on the hard-label loss
      hidden_weight=0.0,     # > 0: MSE of projected student hidden states to the teacher's
  ))


def default_pruning_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      sparsity=0.0,          # final fraction of zero weights in the targeted kernels; 0 = off
      pattern="unstructured",  # 'unstructured' | '2:4'
      scope="layer",         # 'layer' (each kernel its own threshold) | 'global'
      targets=r"(attention|mlp)/",
      begin_step=0,          # gradual (Zhu & Gupta): cubic ramp from begin to end step
      end_step=0,            # 0 = one shot at begin_step
      update_every=10,
  ))
