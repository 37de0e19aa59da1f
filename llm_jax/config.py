"""The experiment config: one ConfigDict with model, data, objective, optimizer, mesh, sharding, train.

Experiment files in configs/ start from `base_config()` and override fields; `finalize` checks
the result before any work starts.
"""

import ml_collections

VOCAB_MULTIPLE = 128


def default_train_config():
  cfg = ml_collections.ConfigDict()
  cfg.batch_size = 12  # GLOBAL batch size (sequences per step, summed over all devices).
  cfg.steps = 1000
  cfg.seed = 0
  cfg.log_every = 10
  cfg.eval_every = 200
  cfg.eval_batches = 8
  cfg.checkpoint_every = 200  # 0: no periodic checkpoints (the final one is still written).
  cfg.keep_checkpoints = 3
  cfg.async_checkpointing = True
  # 'shard': each process reads its own documents; 'slice': each reads the global batch and
  # keeps its rows (batches independent of the process count, at the cost of reading it all).
  cfg.data_per_process = "shard"
  cfg.nan_at_step = -1  # Test hook: the loss of this step (counted from 1) is NaN.
  # True: start over even if --workdir holds a run (it is renamed to WORKDIR.overwritten-TIME).
  # False: a rerun resumes, and a workdir of another model/data/task config is an error.
  cfg.overwrite = False
  cfg.progress_bar = True
  cfg.tensorboard = True
  cfg.plot = True
  # Fine-tuning: 'hf:FOLDER' (a Hugging Face folder), 'workdir:DIR' (the latest checkpoint of a
  # run) or a checkpoint step directory (DIR/checkpoints/STEP); '' = random init. Parameters in
  # both are copied, new ones are initialised; a shape mismatch is an error unless the
  # parameter's path matches `reinit` (a regex). A run that has its own checkpoint resumes it.
  cfg.init_from = ""
  cfg.reinit = ""
  return cfg


def base_config(model_preset=None):
  """Every section at its default, the model from `model_preset` (a models preset name) if given.

  model.vocab_size is 0: `finalize` sets it to the tokenizer's vocab size.
  """
  # pylint: disable=g-import-not-at-top
  from llm_jax import data
  from llm_jax import models
  from llm_jax import objectives
  from llm_jax import sharding
  from llm_jax import tasks
  from llm_jax.training import optimizer
  # pylint: enable=g-import-not-at-top

  cfg = ml_collections.ConfigDict()
  cfg.model = models.get_preset(model_preset) if model_preset else models.default_model_config()
  cfg.model.vocab_size = 0
  cfg.data = data.default_data_config()
  cfg.objective = objectives.default_objective_config()
  cfg.optimizer = optimizer.default_optimizer_config()
  cfg.mesh = sharding.default_mesh_config()
  cfg.sharding = ml_collections.ConfigDict()
  cfg.sharding.rules = sharding.default_sharding_rules()
  cfg.task = tasks.default_task_config()
  cfg.train = default_train_config()
  from llm_jax.compress import config as compress_config  # pylint: disable=g-import-not-at-top
  cfg.quantization = compress_config.default_quantization_config()
  cfg.distill = compress_config.default_distill_config()
  cfg.pruning = compress_config.default_pruning_config()
  return cfg


def _check_positive(cfg, path):
  section, key = path.split(".")
  value = cfg[section][key]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"config.{path} must be a positive integer, got {value!r}")


def check_mesh(cfg, device_count, process_count=1):
  """The mesh must fit the devices and the GLOBAL batch must split over data*fsdp and processes."""
  from llm_jax import sharding  # pylint: disable=g-import-not-at-top
  sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(cfg.mesh, device_count)))
  batch_ways = sizes["data"] * sizes["fsdp"]
  if cfg.train.batch_size % batch_ways:
    raise ValueError(f"config.train.batch_size={cfg.train.batch_size} (global) is not divisible by "
                     f"the data*fsdp mesh size {batch_ways} (mesh {sizes})")
  if cfg.train.batch_size % process_count:
    raise ValueError(f"config.train.batch_size={cfg.train.batch_size} (global) is not divisible by "
                     f"the {process_count} processes")
  return sizes


def finalize(cfg, device_count=None, process_count=None):
  """Validates `cfg` in place; model.vocab_size 0 becomes the tokenizer's, rounded up to 128.

  Raises ValueError naming the offending field. Returns cfg.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from llm_jax import data  # pylint: disable=g-import-not-at-top

  expected = {"model", "data", "objective", "optimizer", "mesh", "sharding", "task", "train"}
  missing = expected - set(cfg.keys())
  if missing:
    raise ValueError(f"config is missing sections {sorted(missing)}")
  # alignment: RL runs only; quantization, distill, pruning: llm_jax.compress
  unknown = set(cfg.keys()) - expected - {"alignment", "quantization", "distill", "pruning"}
  if unknown:
    raise ValueError(f"config has unknown sections {sorted(unknown)}; expected {sorted(expected)}")
  for path in ("train.batch_size", "train.steps", "train.log_every", "train.eval_every",
               "train.eval_batches", "train.keep_checkpoints"):
    _check_positive(cfg, path)
  if cfg.train.data_per_process not in ("shard", "slice"):
    raise ValueError(f"config.train.data_per_process={cfg.train.data_per_process!r}: expected "
                     "'shard' or 'slice'")
  if not isinstance(cfg.data.sequence_length, int) or cfg.data.sequence_length <= 0:
    raise ValueError(f"config.data.sequence_length must be a positive integer, got "
                     f"{cfg.data.sequence_length!r}")
  if cfg.train.checkpoint_every < 0:
    raise ValueError(f"config.train.checkpoint_every must be >= 0, got {cfg.train.checkpoint_every}")

  from llm_jax import tasks  # pylint: disable=g-import-not-at-top
  from llm_jax.training import init_from  # pylint: disable=g-import-not-at-top
  if cfg.task.name not in tasks.NAMES:
    raise ValueError(f"config.task.name={cfg.task.name!r}: expected one of {tasks.NAMES}")
  init_from.resolve_config(cfg)
  from llm_jax.data import preference_data  # pylint: disable=g-import-not-at-top
  if cfg.task.name in preference_data.PREFERENCE_TASKS:
    preference_data.check_preference_task(cfg)
  if cfg.task.name in ("classification", "regression") and cfg.model.num_labels < 1:
    raise ValueError(f"config.task.name={cfg.task.name!r} needs config.model.num_labels >= 1 "
                     "(regression: 1)")
  if cfg.task.name == "regression" and cfg.model.num_labels != 1:
    raise ValueError(f"config.task.name='regression' needs config.model.num_labels=1, got "
                     f"{cfg.model.num_labels}")
  if cfg.task.name == "pretrain" and cfg.objective.nsp and cfg.data.pack:
    raise ValueError("config.objective.nsp: the NSP head reads each row's first token, so "
                     "rows must hold one example: set config.data.pack=False")

  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  check_mesh(cfg, device_count, process_count)

  tokenizer = data.make_tokenizer(cfg.data)
  if not cfg.model.vocab_size:
    # Rounded up so the vocab axis splits over any 'tensor' mesh axis (and runs fast on TPU).
    cfg.model.vocab_size = -(-tokenizer.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
  if cfg.model.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"config.model.vocab_size={cfg.model.vocab_size} is smaller than the "
                     f"{cfg.data.tokenizer!r} tokenizer's vocab_size={tokenizer.vocab_size}")
  virtual = cfg.model.peft.prefix_length + cfg.model.peft.prompt_length
  if cfg.model.position == "learned" and cfg.model.max_len < cfg.data.sequence_length + virtual:
    raise ValueError(f"config.model.max_len={cfg.model.max_len} is shorter than "
                     f"config.data.sequence_length={cfg.data.sequence_length}"
                     + (f" + the {virtual} prefix / soft-prompt positions" if virtual else ""))
  return cfg
