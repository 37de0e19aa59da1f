"""train.init_from: Hugging Face folders and llm_jax runs as the starting point of a run."""


import jax
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax import models
from llm_jax import sharding
from llm_jax.training import init_from
from llm_jax.training import partition
from llm_jax.training import train_step as train_step_lib

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             vocab_size=512, max_position_embeddings=64)


def _hf_bert(folder, model_cls="BertForMaskedLM", **overrides):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = getattr(transformers, model_cls)(transformers.BertConfig(**SIZES, **overrides)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(folder, safe_serialization=True)
  return model


def _classification_config(folder, num_labels=3, **model):
  cfg = config_lib.base_config("bert_tiny")
  cfg.task.name = "classification"
  cfg.model.update(num_labels=num_labels, mlm_head=False, nsp_head=False, pooler=True, **model)
  cfg.train.init_from = f"hf:{folder}"
  cfg.train.batch_size = 8
  cfg.data.sequence_length = 16
  return config_lib.finalize(cfg)


def _state(cfg):
  model = models.build_model(cfg.model)
  mesh = sharding.make_mesh(cfg.mesh)
  initial = init_from.initial_params(cfg, models.abstract_params(model, cfg.model))
  state, _ = train_step_lib.create_train_state(cfg, model, mesh, jax.random.key(0),
                                               initial_params=initial)
  return model, state, initial


@pytest.mark.hf
@pytest.mark.parametrize("scan_layers", [False, True])
def test_hf_bert_start_reproduces_the_encoder_and_adds_a_new_head(tmp_path, scan_layers):
  import torch  # pylint: disable=g-import-not-at-top
  hf = _hf_bert(tmp_path / "bert")
  cfg = _classification_config(tmp_path / "bert", scan_layers=scan_layers)
  assert (cfg.model.d_model, cfg.model.num_layers, cfg.model.vocab_size) == (32, 2, 512)
  model, state, initial = _state(cfg)
  assert not any(n.startswith(("classifier", "pooler")) for n in initial)  # MLM folder: new heads
  assert "classifier/kernel" in partition.flat(state.params)
  tokens = np.random.default_rng(0).integers(1, 512, (2, 12)).astype(np.int32)
  ours = model.apply({"params": jax.device_get(train_step_lib.full_params(state))}, tokens)
  with torch.no_grad():
    theirs = hf.bert(torch.as_tensor(tokens, dtype=torch.long)).last_hidden_state.numpy()
  assert np.max(np.abs(np.asarray(ours["hidden_states"]) - theirs)) < 1e-4
  assert ours["class_logits"].shape == (2, 3)


@pytest.mark.hf
def test_a_head_of_another_shape_is_an_error_unless_reinit(tmp_path):
  _hf_bert(tmp_path / "bert", "BertForSequenceClassification", num_labels=2)
  cfg = _classification_config(tmp_path / "bert", num_labels=3)
  model = models.build_model(cfg.model)
  with pytest.raises(ValueError, match=r"parameter classifier/bias has shape \(2,\) there "
                     r"but \(3,\) in this model; set config.train.reinit"):
    init_from.initial_params(cfg, models.abstract_params(model, cfg.model))
  cfg.train.reinit = r"^classifier/"
  initial = init_from.initial_params(cfg, models.abstract_params(model, cfg.model))
  assert "pooler/kernel" in initial and "classifier/kernel" not in initial


@pytest.mark.hf
def test_a_folder_of_another_architecture_names_both_families(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  transformers.GPT2LMHeadModel(transformers.GPT2Config(
      n_embd=32, n_layer=1, n_head=2, vocab_size=512, n_positions=32)).save_pretrained(
          tmp_path / "gpt2", safe_serialization=True)
  with pytest.raises(ValueError, match=r"holds a decoder model \(gpt2\), but "
                     r"config.model.family is 'encoder'"):
    _classification_config(tmp_path / "gpt2")


def test_init_from_values_are_checked(tmp_path):
  with pytest.raises(ValueError, match="expected 'hf:FOLDER', 'workdir:DIR'"):
    init_from.parse("somewhere")
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    init_from.parse(f"hf:{tmp_path / 'missing'}")


def test_unrolled_and_stacked_layers_convert_into_each_other():
  source = {"d/layers_0/w": np.zeros((2,)), "d/layers_1/w": np.ones((2,)), "e/layers/v": np.eye(2)}
  out = init_from._restack(source, {"d/layers/w": (2, 2), "e/layers_1/v": (2,)})  # pylint: disable=protected-access
  np.testing.assert_array_equal(out["d/layers/w"], [[0, 0], [1, 1]])
  np.testing.assert_array_equal(out["e/layers_1/v"], [0, 1])


def test_workdir_start_copies_a_runs_parameters(tmp_path, tiny_config):
  from llm_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(steps=3)
  loop.train(cfg, str(tmp_path / "base"))
  cfg = tiny_config(steps=2)
  cfg.train.init_from = f"workdir:{tmp_path / 'base'}"
  cfg.optimizer.frozen = "token_embed"
  cfg = config_lib.finalize(cfg)
  model = models.build_model(cfg.model)
  initial = init_from.initial_params(cfg, models.abstract_params(model, cfg.model))
  from llm_jax.evaluation import load  # pylint: disable=g-import-not-at-top
  _, base_params, _, _ = load.load_from_workdir(str(tmp_path / "base"))
  base = partition.flat(jax.device_get(base_params))
  assert set(initial) == set(base)
  for name, value in initial.items():
    np.testing.assert_array_equal(value, base[name])
  # A step directory works too, and so does resuming the fine-tuning run itself.
  step_dir = tmp_path / "base" / "checkpoints" / "3"
  assert init_from.parse(str(step_dir)) == ("step", str(step_dir))
  result = loop.train(cfg, str(tmp_path / "finetune"))
  assert result["step"] == 2
  _, tuned, _, _ = load.load_from_workdir(str(tmp_path / "finetune"))
  np.testing.assert_array_equal(jax.device_get(tuned["token_embed"]["embedding"]),
                                base["token_embed/embedding"])
