r"""python -m llm_jax.train --config=configs/dpo_tiny.py --workdir=workdirs/dpo_tiny

Direct preference optimisation (beta 0.1) of the LLaMA-style tiny decoder on generated
arithmetic preference pairs ("12+7=" with the correct answer chosen, a near miss rejected;
llm_jax/data/arithmetic_preferences.py). The reference policy is the initial policy, frozen:
run in the step (task.reference='in_step'), or scored once before the first step into
WORKDIR/reference_logps.npz (--config.task.reference=precomputed: no second copy of the
parameters in memory). The eval reports preference accuracy (implicit reward margin > 0).
Start from the arithmetic SFT model, as the DPO paper starts from an SFT policy:

  python -m llm_jax.train --config=configs/dpo_tiny.py --workdir=workdirs/dpo_tiny \
      --config.train.init_from=workdir:workdirs/arithmetic_sft

IPO, SimPO and ORPO: --config.task.name=ipo|simpo|orpo (SimPO and ORPO use no reference);
conservative DPO: --config.task.label_smoothing=0.1; LoRA: --config.model.peft.lora_rank=8
(the reference is then the base with its adapters off).
"""

from llm_jax import config as config_lib


def get_config(arg=None):
  del arg
  cfg = config_lib.base_config("llama_tiny")
  cfg.task.name = "dpo"
  cfg.task.template = "{prompt}"
  cfg.task.beta = 0.1
  cfg.task.reference = "in_step"
  cfg.data.train_files = "arithmetic:preferences/train"
  cfg.data.eval_files = "arithmetic:preferences/validation"
  cfg.data.sequence_length = 16
  cfg.optimizer.learning_rate = 5e-4
  cfg.optimizer.warmup_steps = 20
  cfg.optimizer.weight_decay = 0.0
  cfg.train.batch_size = 32  # 16 pairs
  cfg.train.steps = 400
  cfg.train.log_every = 20
  cfg.train.eval_every = 100
  cfg.train.eval_batches = 13
  cfg.train.checkpoint_every = 100
  return cfg
