"""Model config: every field with its default, and named presets."""

import ml_collections
from ml_collections import config_dict

FAMILIES = ("encoder", "decoder", "encoder_decoder")


def default_model_config() -> ml_collections.ConfigDict:
  """Every model field with a typed default (a small pre-LN causal decoder)."""
  c = ml_collections.ConfigDict()
  c.family = "decoder"  # 'encoder' | 'decoder' | 'encoder_decoder'
  c.vocab_size = 256
  c.d_model = 128
  c.num_layers = 2  # encoder layers for encoder_decoder
  c.num_decoder_layers = config_dict.placeholder(int)  # encoder_decoder; None = num_layers
  c.num_heads = 4
  c.num_kv_heads = config_dict.placeholder(int)  # None = num_heads (MHA); 1 = MQA
  c.head_dim = config_dict.placeholder(int)  # None = d_model // num_heads
  c.d_ff = 512
  # 'relu','gelu','gelu_tanh','silu' or gated 'swiglu','geglu','geglu_tanh','reglu'.
  c.activation = "gelu"
  c.norm = "layernorm"  # 'layernorm' | 'rmsnorm' (no mean, no bias: T5 / LLaMA)
  c.norm_eps = 1e-5
  c.norm_position = "pre"  # 'pre' | 'post' | 'deepnorm'
  c.deepnorm_init_beta = False  # deepnorm only: scale value/out/mlp kernel init by DeepNet beta
  c.use_bias = True  # biases in attention and MLP dense layers
  c.position = "learned"  # 'learned'|'sinusoidal'|'rope'|'alibi'|'t5_relative'|'none'
  c.max_len = 128  # rows of the learned position table (without position_offset)
  c.position_offset = 0  # added to positions before the learned table (RoBERTa, BART: 2)
  c.rope_theta = 10000.0
  c.rope_scaling = "none"  # 'none' | 'linear' (positions / factor) | 'ntk' (theta * factor**(d/(d-2)))
  c.rope_scaling_factor = 1.0
  c.relative_num_buckets = 32  # t5_relative
  c.relative_max_distance = 128  # t5_relative
  c.attention = "causal"  # decoder-only: 'causal' | 'prefix'; encoders are bidirectional
  c.scale_attention = True  # scale queries by head_dim**-0.5 (T5: False)
  # How softmax attention runs: 'auto' (splash on TPU, cuDNN dot_product_attention on NVIDIA GPUs
  # in bf16/fp16, else 'xla'), 'xla' (einsum reference), 'dot_product_attention'
  # (jax.nn.dot_product_attention), 'splash' (Pallas TPU kernel). See models/attention_ops.py.
  c.attention_impl = "auto"
  c.attention_interpret = False  # run Pallas kernels (splash) in interpret mode, e.g. on CPU
  # Self-attention: 'full' (softmax), 'block_sparse' (local blocks + global tokens), 'linear'
  # (elu+1 kernelised, O(L); causal or bidirectional, not prefix).
  c.attention_kind = "full"
  c.sliding_window = 0  # > 0: a query at position i attends keys i-window+1..i (HF Mistral)
  c.sliding_window_layers = "all"  # 'all' | 'every:N' (layers 0, N, 2N, ...) | '0,2,5'
  c.block_sparse_block_size = 64  # block_sparse: a query sees its position block and the previous
  c.block_sparse_global_tokens = 1  # block_sparse: the first N tokens of each segment are global
  c.linear_attention_chunk = 64  # linear: chunk length of the causal chunk-wise form
  c.tie_embeddings = True  # output head reuses the token embedding
  c.scale_embeddings = False  # multiply token embeddings by sqrt(d_model)
  c.embedding_norm = False  # norm right after the embeddings (BERT, BART)
  c.final_norm = True  # norm after the last layer (pre-LN models)
  c.logits_scale_by_dmodel = False  # T5 v1.0: scale by d_model**-0.5 before the tied head
  c.type_vocab_size = 0  # encoder: token-type embeddings (BERT 2, RoBERTa 1); 0 = none
  c.mlm_head = True  # encoder: masked-LM head producing 'logits'
  c.mlm_head_transform = True  # encoder: dense + activation + norm before the MLM decoder
  c.pooler = False  # encoder: dense + tanh on the first token -> 'pooled'
  c.nsp_head = False  # encoder: next-sentence head on 'pooled' -> 'nsp_logits'
  c.num_labels = 0  # encoder: sequence-classification head size -> 'class_logits'; 0 = none
  c.final_logits_bias = False  # a learned bias on the output logits (BART)
  c.pad_token_id = 0
  c.decoder_start_token_id = 0  # encoder_decoder: first decoder input when generating
  c.dropout_rate = 0.0
  c.attention_dropout_rate = 0.0
  c.init_std = 0.02  # stddev of the normal init of kernels and embeddings
  c.dtype = "float32"  # compute dtype; softmax and norms always run in float32
  c.param_dtype = "float32"
  c.scan_layers = False  # nn.scan over layers (params stacked on a leading 'layers' axis)
  # 'none' | 'full' | 'dots' | 'dots_with_no_batch_dims' | 'nothing_saveable' | 'everything_saveable'
  c.remat_policy = "none"
  c.hf_model_type = ""  # Hugging Face model_type this config was converted from / exports to
  c.peft = default_peft_config()
  c.moe = default_moe_config()
  return c


def default_moe_config() -> ml_collections.ConfigDict:
  """Mixture-of-Experts feed-forward layers (see llm_jax/models/moe.py); off at num_experts 0.

  Layer i of a stack is an MoE layer when i % every == offset (Switch Transformers: every 2,
  offset 1; Mixtral: every 1, offset 0).
  """
  c = ml_collections.ConfigDict()
  c.num_experts = 0  # routed experts per MoE layer; 0 = dense FFNs everywhere
  c.top_k = 2  # experts per token ('topk'); 'switch' uses 1
  c.every = 1
  c.offset = 0
  c.num_shared_experts = 0  # experts every token passes through, beside the routed ones
  c.d_ff = config_dict.placeholder(int)  # hidden size of one expert; None = model.d_ff
  c.router = "topk"  # 'topk' (GShard, Mixtral) | 'switch' (k = 1) | 'expert_choice'
  c.normalize_top_k = True  # 'topk': gates of the chosen experts renormalised to sum to 1
  # Tokens per expert and group (a batch row) = ceil(capacity_factor * length * top_k /
  # num_experts); tokens over capacity are dropped (the residual carries them). 0 = dropless.
  c.capacity_factor = 0.0
  c.load_balance_coef = 0.01  # Switch load-balancing loss weight in the training loss
  c.z_loss_coef = 0.001  # ST-MoE router z-loss weight
  return c


# Path components of the parameters the peft methods add (LoRA, (IA)^3, prefix tables and their
# MLP, the soft prompt, bottleneck adapters), searched in '/'-joined parameter paths.
PEFT_PARAMS = r"(^|/)(lora_a|lora_b|ia3_scale|prefix\w*|soft_prompt|\w*_adapter)(/|$)"


def default_peft_config() -> ml_collections.ConfigDict:
  """Parameter-efficient fine-tuning: each method is off at its default and they combine.

  Target regexes are searched in a dense layer's module path below the model, e.g.
  'decoder/layers_0/self_attention/query' (with scan_layers: 'decoder/layers/self_attention/query').
  """
  c = ml_collections.ConfigDict()
  c.lora_rank = 0  # LoRA: 0 = off
  c.lora_alpha = 16.0  # the update is (alpha / rank) * x A B
  c.lora_dropout = 0.0  # dropout on the LoRA branch's input
  c.lora_targets = r"attention/(query|value)$"
  # QLoRA: every frozen dense kernel stored as 'nf4' or 'int8' ('none': float), dequantized by
  # each layer as it runs.
  c.base_quantization = "none"
  c.quantization_block_size = 64
  c.ia3_targets = ""  # (IA)^3: '' = off; e.g. r"attention/(key|value)$|mlp/wo$"
  c.ia3_feedforward = r"mlp/wo$"  # of the ia3 targets, those scaled at their input, not output
  c.prefix_length = 0  # prefix tuning / P-tuning v2: learned keys and values in every layer
  c.prefix_hidden = 0  # > 0: prefixes come from a reparameterisation MLP of this hidden size
  c.prompt_length = 0  # prompt tuning: learned soft-prompt embeddings before the input
  c.adapter_size = 0  # Houlsby bottleneck adapters after attention and MLP; 0 = off
  return c


_BERT = dict(
    family="encoder", vocab_size=30522, d_model=768, num_layers=12, num_heads=12, d_ff=3072,
    activation="gelu", norm="layernorm", norm_eps=1e-12, norm_position="post", use_bias=True,
    position="learned", max_len=512, embedding_norm=True, final_norm=False, type_vocab_size=2,
    pooler=True, nsp_head=True, mlm_head=True, mlm_head_transform=True, pad_token_id=0,
    dropout_rate=0.1, attention_dropout_rate=0.1)

_GPT2 = dict(
    family="decoder", vocab_size=50257, d_model=768, num_layers=12, num_heads=12, d_ff=3072,
    activation="gelu_tanh", norm="layernorm", norm_eps=1e-5, norm_position="pre",
    use_bias=True, position="learned", max_len=1024, tie_embeddings=True, final_norm=True,
    pad_token_id=50256, dropout_rate=0.1, attention_dropout_rate=0.1)

_LLAMA = dict(
    family="decoder", activation="swiglu", norm="rmsnorm", norm_eps=1e-5, norm_position="pre",
    use_bias=False, position="rope", final_norm=True)

_T5_V1_0 = dict(
    family="encoder_decoder", vocab_size=32128, activation="relu", norm="rmsnorm", norm_eps=1e-6,
    norm_position="pre", use_bias=False, position="t5_relative", relative_num_buckets=32,
    relative_max_distance=128, scale_attention=False, tie_embeddings=True,
    logits_scale_by_dmodel=True, final_norm=True, max_len=512, pad_token_id=0,
    decoder_start_token_id=0, dropout_rate=0.1)

_T5_V1_1 = dict(_T5_V1_0, activation="geglu_tanh", tie_embeddings=False,
                logits_scale_by_dmodel=False)

_BART = dict(
    family="encoder_decoder", vocab_size=50265, d_model=768, num_layers=6, num_heads=12,
    d_ff=3072, activation="gelu", norm="layernorm", norm_eps=1e-5, norm_position="post",
    use_bias=True, position="learned", max_len=1024, position_offset=2, embedding_norm=True,
    final_norm=False, tie_embeddings=True, final_logits_bias=True, pad_token_id=1,
    decoder_start_token_id=2, dropout_rate=0.1, attention_dropout_rate=0.0, hf_model_type="bart")

PRESETS = {
    "bert_base": _BERT,
    "roberta_base": dict(_BERT, vocab_size=50265, norm_eps=1e-5, max_len=512, position_offset=2,
                         type_vocab_size=1, pooler=False, nsp_head=False, pad_token_id=1,
                         hf_model_type="roberta"),
    "gpt2_small": _GPT2,
    "llama_1b": dict(_LLAMA, vocab_size=128256, d_model=2048, num_layers=16, num_heads=32,
                     num_kv_heads=8, d_ff=8192, max_len=131072, rope_theta=500000.0,
                     tie_embeddings=True, pad_token_id=0),
    "t5_small_v1_0": dict(_T5_V1_0, d_model=512, num_layers=6, num_heads=8, head_dim=64,
                          d_ff=2048),
    "t5_small_v1_1": dict(_T5_V1_1, d_model=512, num_layers=8, num_heads=6, head_dim=64,
                          d_ff=1024),
    "t5_base_v1_1": dict(_T5_V1_1, d_model=768, num_layers=12, num_heads=12, head_dim=64,
                         d_ff=2048),
    "bart_base": _BART,
    # Tiny models for tests and CPU experiments.
    "gpt_tiny": dict(_GPT2, vocab_size=65, d_model=128, num_layers=4, num_heads=4, d_ff=512,
                     max_len=64, pad_token_id=0, dropout_rate=0.0, attention_dropout_rate=0.0),
    "llama_tiny": dict(_LLAMA, vocab_size=256, d_model=64, num_layers=2, num_heads=4,
                       num_kv_heads=2, d_ff=128, max_len=128, tie_embeddings=False),
    "bert_tiny": dict(_BERT, vocab_size=256, d_model=64, num_layers=2, num_heads=4, d_ff=128,
                      max_len=128, dropout_rate=0.0, attention_dropout_rate=0.0),
    "t5_tiny": dict(_T5_V1_1, vocab_size=256, d_model=64, num_layers=2, num_heads=4,
                    head_dim=16, d_ff=128, relative_num_buckets=8, relative_max_distance=16,
                    max_len=128, dropout_rate=0.0),
    "bart_tiny": dict(_BART, vocab_size=256, d_model=64, num_layers=2, num_heads=4, d_ff=128,
                      max_len=128, dropout_rate=0.0),
}


def get_preset(name: str) -> ml_collections.ConfigDict:
  """The full model config (defaults + the preset's overrides) of a named preset."""
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; known: {sorted(PRESETS)}")
  c = default_model_config()
  c.update(PRESETS[name])
  return c
