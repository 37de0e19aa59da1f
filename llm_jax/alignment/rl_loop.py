r"""The RL loop, `train(cfg, workdir)`: rollout -> reward -> advantages -> minibatch updates.

  python -m llm_jax.train --config=configs/grpo_tiny.py --workdir=workdirs/grpo_tiny

Each iteration (one of cfg.train.steps; checkpoints count iterations):
  1. picks alignment.prompts_per_step prompts (seeded by the iteration) and samples
     alignment.num_generations completions of each with the compiled KV-cache sampler, using
     the current (sharded) parameters under the run's mesh and an rng folded from the iteration;
  2. scores them with the reward (rewards.py); a failing reward stops the run before the
     iteration's checkpoint, naming the prompt;
  3. computes the old and reference log-probabilities of the completion tokens, and the
     advantages: group-relative (GRPO) or GAE on KL-shaped rewards with a critic (PPO);
  4. runs alignment.epochs passes of minibatch updates (cfg.train.batch_size rows each) of the
     task's loss (llm_jax/tasks/policy_gradient.py) through the one train step; PPO's critic is a
     second decoder (models/value_head.py) updated by the same train step on its own state.
The reference is the frozen initial policy, kept in TrainState.frozen (train_step.REFERENCE).
Rerunning resumes exactly: rollouts, prompt choice and minibatch order depend on the iteration
only, and the loop's own state (PPO's adaptive KL coefficient) is checkpointed with the policy.
Metrics per iteration go to workdir/metrics.jsonl: reward, KL, entropy, clip fraction,
response length, rollout tokens/s and, every train.eval_every iterations, eval_reward (the mean
reward of greedy completions of the held-out prompts: exact match for arithmetic).
"""

import dataclasses
import json
import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from llm_jax import config as config_lib
from llm_jax import data
from llm_jax import models
from llm_jax import sharding
from llm_jax.alignment import advantages as advantages_lib
from llm_jax.alignment import config as alignment_config
from llm_jax.alignment import evaluation
from llm_jax.alignment import kl as kl_lib
from llm_jax.alignment import rewards as rewards_lib
from llm_jax.alignment import rollout
from llm_jax.data import arithmetic
from llm_jax.models import value_head
from llm_jax.training import checkpoint as checkpoint_lib
from llm_jax.training import init_from as init_from_lib
from llm_jax.training import metrics as metrics_lib
from llm_jax.training import train_step as train_step_lib

METHODS = alignment_config.METHODS
RewardError = rewards_lib.RewardError
CRITIC_DIR = "critic"  # PPO's critic: its own checkpoints under workdir/critic


@dataclasses.dataclass(frozen=True)
class Prompts:
  examples: list  # rows: {'prompt': ..., 'answer': ...}
  ids: list  # the rendered prompt's token ids per row


def load_prompts(cfg, tokenizer, split: str) -> Prompts:
  """The rollout ('train') or held-out ('eval') prompts of cfg.alignment."""
  align = cfg.alignment
  source = align.prompts if split == "train" else align.eval_prompts
  field = "alignment.prompts" if split == "train" else "alignment.eval_prompts"
  if source == "arithmetic":
    train, held_out = arithmetic.train_and_held_out(
        align.arithmetic_train_problems, align.arithmetic_held_out, align.arithmetic_seed,
        align.arithmetic_max_operand, align.arithmetic_operators)
    examples = train if split == "train" else held_out
  else:
    examples = arithmetic.read_problems(os.path.expanduser(source))
  ids = []
  for index, row in enumerate(examples):
    try:
      text = align.template.format(**row)
    except KeyError as e:
      raise ValueError(f"{field} row {index}: alignment.template {align.template!r} needs the "
                       f"field {e}") from e
    ids.append(tokenizer.encode(text))
    if not ids[-1] or len(ids[-1]) > align.max_prompt_length:
      raise ValueError(f"{field} row {index} ({text!r}) has {len(ids[-1])} tokens; expected "
                       f"1..alignment.max_prompt_length={align.max_prompt_length}")
  return Prompts(examples, ids)


class LoopState:
  """What the loop carries between iterations besides the TrainState (PPO's KL coefficient),
  checkpointed as the checkpoint's iterator item (get_state / set_state)."""

  def __init__(self, kl_coef: float):
    self.kl_coef = float(kl_coef)

  def get_state(self):
    return {"kl_coef": self.kl_coef}

  def set_state(self, state):
    self.kl_coef = float(state["kl_coef"])


def choose_prompts(num_prompts: int, count: int, seed: int, iteration: int) -> np.ndarray:
  """Indices of the iteration's prompts: a function of (seed, iteration) only."""
  rng = np.random.default_rng([seed, iteration])
  return rng.choice(num_prompts, size=count, replace=count > num_prompts)


def check_config(cfg) -> None:
  align = cfg.get("alignment")
  if align is None:
    raise ValueError(f"config.task.name={cfg.task.name!r} needs an 'alignment' section "
                     "(llm_jax/alignment/config.py)")
  if align.method not in alignment_config.METHODS or cfg.task.name != align.method:
    raise ValueError(f"config.alignment.method={align.method!r} must be one of "
                     f"{alignment_config.METHODS} and equal config.task.name={cfg.task.name!r}")
  if cfg.task.reference != "in_step":
    raise ValueError("config.task.reference must be 'in_step' for RL: the frozen reference "
                     "policy scores every rollout")
  rows = align.prompts_per_step * align.num_generations
  if rows % cfg.train.batch_size:
    raise ValueError(f"alignment.prompts_per_step * num_generations = {rows} rollout rows must "
                     f"be a multiple of config.train.batch_size={cfg.train.batch_size}")
  if align.method == "grpo" and align.num_generations < 2:
    raise ValueError("alignment.num_generations must be >= 2 for GRPO's group baseline")
  if align.epochs < 1:
    raise ValueError(f"alignment.epochs must be >= 1, got {align.epochs}")


def updates_per_iteration(cfg) -> int:
  align = cfg.alignment
  return align.epochs * align.prompts_per_step * align.num_generations // cfg.train.batch_size


def _with(cfg, **changes):
  """A copy of cfg with 'section.field' values replaced."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  for path, value in changes.items():
    section, field = path.split(".")
    out[section][field] = value
  return out


@dataclasses.dataclass
class Learner:
  """A model and its TrainState with the jitted train step (policy or critic)."""
  cfg: ml_collections.ConfigDict
  model: object
  layout: object
  checkpointer: checkpoint_lib.Checkpointer
  state: object = None
  step: object = None


def _make_learner(cfg, model, mesh, directory) -> Learner:
  layout = train_step_lib.state_layout(cfg, model, mesh)
  checkpointer = checkpoint_lib.Checkpointer(
      directory, save_every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints,
      async_save=cfg.train.async_checkpointing)
  return Learner(cfg, model, layout, checkpointer)


def _start(learner: Learner, mesh, loop_state):
  """Restores the learner's latest checkpoint (returns its iteration) or creates its state."""
  restored = learner.checkpointer.restore_latest(
      learner.layout.abstract_state, learner.layout.shardings, loop_state)
  if restored is None:
    cfg, model = learner.cfg, learner.model
    initial = None
    if cfg.train.init_from:
      initial = init_from_lib.initial_params(cfg, models.abstract_params(model, cfg.model))
    learner.state, _ = train_step_lib.create_train_state(
        cfg, model, mesh, jax.random.key(cfg.train.seed), initial_params=initial,
        layout=learner.layout)
    iteration = 0
  else:
    iteration, learner.state, _ = restored
  learner.step = train_step_lib.make_train_step(
      learner.cfg, learner.model, mesh, learner.layout.shardings, layout=learner.layout)
  return iteration


def _policy_scorer(cfg, model, mesh):
  """(params, frozen, batch) -> (old_logprobs, ref_logprobs) [B, L] of the batch's targets."""
  from llm_jax.tasks import policy_gradient  # pylint: disable=g-import-not-at-top
  opts = train_step_lib.step_options(cfg, model, mesh)
  temperature = float(cfg.alignment.temperature)

  def score(params, frozen, batch):
    logits = train_step_lib.apply_model(opts, params, frozen, batch)["logits"]
    ref_logits = train_step_lib.reference_outputs(opts, params, frozen, batch)["logits"]
    return (policy_gradient.token_logprobs(logits, batch["targets"], temperature),
            policy_gradient.token_logprobs(ref_logits, batch["targets"], temperature))
  return jax.jit(score)


def _critic_values(cfg, model, mesh):
  opts = train_step_lib.step_options(cfg, model, mesh)
  return jax.jit(lambda params, frozen, batch: train_step_lib.apply_model(
      opts, params, frozen, batch)["values"])


class _Run:
  """Everything one run needs, built once."""

  def __init__(self, cfg, workdir):
    self.cfg = cfg
    self.align = cfg.alignment
    self.mesh = sharding.make_mesh(cfg.mesh)
    self.rules = sharding.rules_from_config(cfg)
    self.tokenizer = data.make_tokenizer(cfg.data)
    self.sampler = rollout.sampler_options(self.align, self.tokenizer)
    self.train_prompts = load_prompts(cfg, self.tokenizer, "train")
    self.eval_prompts = load_prompts(cfg, self.tokenizer, "eval")
    self.reward = rewards_lib.make_reward(self.align.reward, self.mesh, self.rules)
    self.row_length = self.align.max_prompt_length + self.align.max_new_tokens
    update_cfg = _with(cfg, **{"train.steps": cfg.train.steps * updates_per_iteration(cfg)})
    self.policy = _make_learner(update_cfg, models.build_model(cfg.model), self.mesh, workdir)
    self.score = _policy_scorer(update_cfg, self.policy.model, self.mesh)
    self.critic = None
    if self.align.method == "ppo":
      critic_cfg = _with(update_cfg, **{"task.name": "ppo_value",
                                        "optimizer.learning_rate": self.align.critic_learning_rate})
      critic_model = value_head.ValueDecoder(ml_collections.FrozenConfigDict(cfg.model))
      self.critic = _make_learner(critic_cfg, critic_model, self.mesh,
                                  os.path.join(workdir, CRITIC_DIR))
      self.values = _critic_values(critic_cfg, critic_model, self.mesh)

  def global_batch(self, batch_np):
    return sharding.make_global_batch(batch_np, self.mesh, self.rules)

  def policy_params(self):
    return train_step_lib.full_params(self.policy.state)

  # ------------------------------------------------------------------ one iteration

  def rollout(self, iteration: int):
    """(indices of the prompts, training batch [B, ...] numpy, rewards [B], lengths [B],
    seconds spent sampling)."""
    align, prompts = self.align, self.train_prompts
    chosen = choose_prompts(len(prompts.ids), align.prompts_per_step, self.cfg.train.seed,
                            iteration)
    indices_B = np.repeat(chosen, align.num_generations)
    rows = [prompts.ids[i] for i in indices_B]
    rng = jax.random.fold_in(jax.random.key(self.cfg.train.seed + 2), iteration)
    start = time.perf_counter()
    completions_BxN = rollout.sample(self.policy.model, self.policy_params(), rows, rng,
                                     self.sampler, self.mesh, self.rules)
    seconds = time.perf_counter() - start
    lengths_B = rollout.completion_lengths(completions_BxN, self.sampler.stop_ids)
    texts = rollout.completion_texts(self.tokenizer, completions_BxN, lengths_B,
                                     self.sampler.stop_ids)
    token_rows = [r + list(c[:n]) for r, c, n in zip(rows, completions_BxN, lengths_B)]
    rewards_B = self.reward(texts, [prompts.examples[i] for i in indices_B], token_rows,
                            prompt_indices=[int(i) for i in indices_B])
    batch = rollout.training_batch(rows, completions_BxN, lengths_B, self.row_length,
                                   self.sampler.pad_id)
    return batch, rewards_B, lengths_B, seconds

  def add_advantages(self, batch, rewards_B, loop_state):
    """Adds old/ref log-probs and advantages (and PPO's returns, old values); returns the
    iteration's mean sequence KL to the reference."""
    state = self.policy.state
    global_batch = self.global_batch(batch)
    with sharding.mesh_context(self.mesh, self.rules):
      old_BxL, ref_BxL = jax.device_get(self.score(state.params, state.frozen, global_batch))
    mask_BxL = batch["loss_weights"]
    batch["old_logprobs"], batch["ref_logprobs"] = np.asarray(old_BxL), np.asarray(ref_BxL)
    if self.align.method == "grpo":
      advantages_B = advantages_lib.group_relative(rewards_B, self.align.num_generations,
                                                   self.align.scale_rewards)
      batch["advantages"] = (advantages_B[:, None] * mask_BxL).astype(np.float32)
    else:
      critic = self.critic.state
      with sharding.mesh_context(self.mesh, self.rules):
        values_BxL = np.asarray(jax.device_get(
            self.values(critic.params, critic.frozen, global_batch))) * mask_BxL
      token_rewards_BxL = advantages_lib.kl_shaped_rewards(
          rewards_B, batch["old_logprobs"], batch["ref_logprobs"], mask_BxL, loop_state.kl_coef)
      advantages_BxL, returns_BxL = advantages_lib.gae(
          token_rewards_BxL, values_BxL, mask_BxL, self.align.gamma, self.align.gae_lambda)
      if self.align.whiten_advantages:
        advantages_BxL = advantages_lib.whiten(advantages_BxL, mask_BxL)
      batch.update(advantages=advantages_BxL, returns=returns_BxL,
                   old_values=values_BxL.astype(np.float32))
    return kl_lib.sequence_kl(batch["old_logprobs"], batch["ref_logprobs"], mask_BxL)

  def update(self, batch, iteration: int) -> dict:
    """alignment.epochs passes of minibatch updates; the mean of the step metrics."""
    rows, size = batch["inputs"].shape[0], self.cfg.train.batch_size
    step_rng = jax.random.key(self.cfg.train.seed + 1)
    history = []
    for epoch in range(self.align.epochs):
      order = np.random.default_rng([self.cfg.train.seed, iteration, epoch]).permutation(rows)
      for start in range(0, rows, size):
        minibatch = self.global_batch({k: v[order[start:start + size]] for k, v in batch.items()})
        self.policy.state, metrics = self.policy.step(self.policy.state, minibatch, step_rng)
        if self.critic is not None:
          self.critic.state, critic_metrics = self.critic.step(self.critic.state, minibatch,
                                                               step_rng)
          metrics = {**metrics, "value_loss": critic_metrics["loss"],
                     "value_error": critic_metrics["value_error"]}
        history.append(metrics)
    history = jax.device_get(history)
    return {k: float(np.mean([m[k] for m in history])) for k in history[0]}

  def evaluate(self) -> np.ndarray:
    """Rewards of greedy completions of the held-out prompts."""
    prompts = self.eval_prompts
    count = min(self.align.eval_examples, len(prompts.ids))
    ids, examples = prompts.ids[:count], prompts.examples[:count]
    texts = evaluation.greedy_completions(
        self.policy.model, self.policy_params(), self.tokenizer, ids, self.sampler,
        self.align.eval_batch_size, self.mesh, self.rules)
    token_rows = [i + self.tokenizer.encode(t) for i, t in zip(ids, texts)]
    rewards = self.reward(texts, examples, token_rows, prompt_indices=range(count))
    return rewards

  def save(self, iteration, loop_state):
    if self.critic is not None:
      self.critic.checkpointer.save(iteration, self.critic.state, loop_state, force=True)
      self.critic.checkpointer.wait()
    self.policy.checkpointer.save(iteration, self.policy.state, loop_state, force=True)

  def close(self):
    for learner in (self.policy, self.critic):
      if learner is not None:
        learner.checkpointer.close()


def _start_all(run: _Run, loop_state) -> int:
  iteration = _start(run.policy, run.mesh, loop_state)
  if run.critic is not None:
    critic_iteration = _start(run.critic, run.mesh, loop_state)
    if critic_iteration != iteration:
      raise RuntimeError(f"the policy's latest checkpoint is at iteration {iteration} but the "
                         f"critic's ({run.critic.checkpointer.directory}) at {critic_iteration}; "
                         "remove the newer one to resume from the older")
  return iteration


def train(cfg, workdir, stop_at_step=None):
  """Runs cfg.train.steps RL iterations in `workdir`, resuming from its latest checkpoint.

  `stop_at_step` ends this call after that iteration, with a checkpoint, as a preemption would.
  Returns the last iteration's metrics.
  """
  cfg = config_lib.finalize(cfg)
  check_config(cfg)
  os.makedirs(workdir, exist_ok=True)
  is_primary = jax.process_index() == 0
  if is_primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  run = _Run(cfg, workdir)
  loop_state = LoopState(cfg.alignment.kl_coef)
  try:
    start = _start_all(run, loop_state)
    if start:
      logging.info("resuming from iteration %d", start)
    if is_primary:
      metrics_lib.drop_rows_after(workdir, start)
    rows = cfg.alignment.prompts_per_step * cfg.alignment.num_generations
    writer = metrics_lib.MetricsWriter(
        workdir, start_step=start, total_steps=cfg.train.steps,
        tokens_per_step=rows * cfg.alignment.max_new_tokens, is_primary=is_primary,
        progress_bar=False, tensorboard=cfg.train.tensorboard)
    bar = tqdm.tqdm(total=cfg.train.steps, initial=start, unit="iter", dynamic_ncols=True,
                    disable=not (is_primary and cfg.train.progress_bar))
    last = {}
    try:
      if start == 0:
        _write_eval(writer, 0, run.evaluate())
      for iteration in range(start, cfg.train.steps):
        last = _iteration(run, iteration, loop_state)
        done = iteration + 1
        if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
          last["eval_reward"] = _write_eval(writer, done, run.evaluate())
        if done % cfg.train.log_every == 0 or done == start + 1 or done == cfg.train.steps:
          writer.write_train(done, last)
        bar.update(1)
        bar.set_postfix(reward=f"{last['reward']:.3f}", kl=f"{last['kl']:.3f}",
                        tok_s=f"{last['rollout_tokens_per_sec']:.0f}",
                        **({"eval": f"{last['eval_reward']:.3f}"} if "eval_reward" in last else {}))
        stop_now = done == stop_at_step
        if run.policy.checkpointer.should_save(done) or done == cfg.train.steps or stop_now:
          run.save(done, loop_state)
        if stop_now and done < cfg.train.steps:
          logging.warning("stopping early: checkpoint at iteration %d in %s", done,
                          run.policy.checkpointer.step_path(done))
          break
    finally:
      bar.close()
      writer.close()
  finally:
    run.close()
  if is_primary:
    with open(os.path.join(workdir, "rl_summary.json"), "w") as f:
      json.dump(last, f, indent=2)
    if cfg.train.plot:
      last = {**last, "plot": plot_rl_curves(workdir)}
  return last


def plot_rl_curves(workdir: str) -> str:
  """Sampled reward and held-out eval_reward against the iteration -> workdir/rl_curves.png."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = metrics_lib.read_rows(workdir)
  train = [(r["step"], r["reward"]) for r in rows if "reward" in r]
  held_out = [(r["step"], r["eval_reward"]) for r in rows if "eval_loss" in r]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for points, label in ((train, "rollout reward (sampled)"),
                        (held_out, "held-out reward (greedy)")):
    if points:
      ax.plot(*zip(*points), marker="o" if points is held_out else None, label=label)
  ax.set_xlabel("iteration")
  ax.set_ylabel("reward (exact match)")
  ax.set_title(os.path.basename(os.path.abspath(workdir)))
  ax.legend()
  fig.tight_layout()
  path = os.path.join(workdir, "rl_curves.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _write_eval(writer, step, rewards) -> float:
  """An eval row: eval_reward (= eval_accuracy) the mean held-out reward, eval_loss its
  negative."""
  total = float(np.sum(rewards))
  writer.write_eval(step, -total, float(len(rewards)), total, extra={"reward": total / len(rewards)})
  return total / len(rewards)


def _iteration(run: _Run, iteration: int, loop_state: LoopState) -> dict:
  batch, rewards_B, lengths_B, sample_seconds = run.rollout(iteration)
  sequence_kl = run.add_advantages(batch, rewards_B, loop_state)
  metrics = run.update(batch, iteration)
  if run.align.method == "ppo":
    metrics["kl_coef"] = loop_state.kl_coef
    loop_state.kl_coef = kl_lib.update_kl_coef(
        loop_state.kl_coef, sequence_kl, len(rewards_B), run.align.kl_target,
        run.align.kl_horizon)
  generated = float(np.sum(lengths_B))
  return {**metrics, "reward": float(np.mean(rewards_B)), "reward_std": float(np.std(rewards_B)),
          "rollout_kl": sequence_kl, "response_length": float(np.mean(lengths_B)),
          "rollout_tokens_per_sec": generated / max(sample_seconds, 1e-9)}
