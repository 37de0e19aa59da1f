"""Knowledge distillation: the KD loss and its gradient, and a run with a frozen teacher."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.evaluation import load
from llm_jax.tasks import distillation
from llm_jax.training import loop


def _batch(b=2, length=5, vocab=11, seed=0):
  rng = np.random.default_rng(seed)
  return {"targets": rng.integers(0, vocab, (b, length)).astype(np.int32),
          "loss_weights": (rng.random((b, length)) > 0.2).astype(np.float32)}


def test_alpha_one_gives_the_gradient_of_the_temperature_scaled_kl():
  batch, t = _batch(), 3.0
  student = jax.random.normal(jax.random.key(0), (2, 5, 11))
  teacher = jax.random.normal(jax.random.key(1), (2, 5, 11)) * 2
  task = distillation.Distillation(temperature=t, alpha=1.0)
  totals = task.totals(batch)
  grad = jax.grad(lambda s: task.loss({"logits": s, "teacher": {"logits": teacher}}, batch,
                                      totals)[0])(student)
  # d/ds T^2 KL(softmax(t/T) || softmax(s/T)) = T (softmax(s/T) - softmax(t/T)) per token.
  want = t * (jax.nn.softmax(student / t) - jax.nn.softmax(teacher / t))
  want = want * batch["loss_weights"][..., None] / np.sum(batch["loss_weights"])
  np.testing.assert_allclose(grad, want, atol=1e-6)


def test_a_student_identical_to_its_teacher_has_zero_kd_loss():
  batch = _batch()
  logits = jax.random.normal(jax.random.key(2), (2, 5, 11))
  task = distillation.Distillation(temperature=2.0, alpha=1.0)
  loss, sums = task.loss({"logits": logits, "teacher": {"logits": logits}}, batch,
                         task.totals(batch))
  assert abs(float(loss)) < 1e-6 and abs(float(sums["kd_loss_sum"])) < 1e-5
  other = task.loss({"logits": logits, "teacher": {"logits": -logits}}, batch,
                    task.totals(batch))[0]
  assert float(other) > 0.1


def test_logits_of_another_vocabulary_are_an_error():
  batch = _batch()
  with pytest.raises(ValueError, match="share the student's vocabulary"):
    distillation.kd_sum(jnp.zeros((2, 5, 11)), jnp.zeros((2, 5, 12)), batch["loss_weights"], 1.0)


def _student(gpt_config, data_dir, teacher, steps=3):
  cfg = gpt_config(data_dir)
  with cfg.unlocked():
    cfg.model.num_layers = 1
    cfg.distill.teacher = teacher
    cfg.train.update(steps=steps, eval_every=steps, log_every=1, checkpoint_every=0,
                     eval_batches=1, plot=False, tensorboard=False, progress_bar=False)
  return cfg


@pytest.mark.slow  # a training run; the loss and its gradient are tested above
def test_a_student_trains_against_a_frozen_teacher_workdir(tiny_workdir, gpt_config, tmp_path):
  teacher_dir, teacher_cfg, _ = tiny_workdir
  cfg = _student(gpt_config, teacher_cfg.data.data_dir, f"workdir:{teacher_dir}")
  result = loop.train(cfg, str(tmp_path / "student"))
  assert np.isfinite(result["loss"]) and result["kd_loss"] > 0
  rows = [json.loads(line) for line in open(tmp_path / "student" / "metrics.jsonl")]
  assert any("kd_loss" in row for row in rows)
  model, params, _, _ = load.load_from_workdir(str(tmp_path / "student"))  # teacher not loaded
  assert "teacher" not in params and model.cfg.num_layers == 1


def test_a_teacher_with_another_vocabulary_is_a_clear_error(tiny_workdir, gpt_config, tmp_path):
  teacher_dir, teacher_cfg, _ = tiny_workdir
  cfg = _student(gpt_config, teacher_cfg.data.data_dir, f"workdir:{teacher_dir}")
  with cfg.unlocked():
    cfg.model.vocab_size = 512
  with pytest.raises(ValueError, match="vocab_size 384.*512"):
    loop.train(cfg, str(tmp_path / "student"))
  assert not os.path.exists(tmp_path / "student" / "checkpoints")
