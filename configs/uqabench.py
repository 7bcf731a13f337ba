"""The paper's setting, Stages 1-3: official data, the 25M Trm++ encoder, Qwen2.5-3B-Instruct,
the `mean` adapter (one soft token at position 0), adapter-only alignment with the official recipe.

  python -m uqa_jax.main --config configs/uqabench.py \
      --config.data.path=/data/uqabench --config.llm.model=/models/Qwen2.5-3B-Instruct

Nothing downloads: bring the four Kaggle files (pretrain_data_{train,eval}.arrow,
align_data_{train,eval}.arrow) and a local Hugging Face directory of Qwen2.5-3B-Instruct. A
missing path stops the run at start with a message naming the config key and the path.
Stage 2 is the official recipe (AlignConfig defaults): AdamW lr 1e-4 constant, betas
(0.9, 0.98), weight decay 0, clip 1.5, 3 epochs of batch 32, LLM and encoder frozen; the LLM
computes in bfloat16 (as the official code trains), the adapter and the loss in float32. Chats
are cut at 512 tokens as the official code pads them (a longer one is an error naming its row).
Stage 3 asks every align-eval question with the trained model and with another user's soft
prompt (`shuffled_user`), next to the floors, and scores whole answers the official way, strictly
and by ranking the listed candidates. Sized for accelerators: a 3B LLM step does not fit a
laptop's time.
"""

from configs import official

DATA_DIR = "data/uqabench"  # the Kaggle files; override with --config.data.path
QWEN_DIR = "models/Qwen2.5-3B-Instruct"  # override with --config.llm.model


def get_config():
  c = official.get_config()
  c.stages = ("data", "pretrain", "align", "evaluate", "diagnose", "report")
  c.data.path = DATA_DIR
  c.llm.model = QWEN_DIR
  c.llm.dtype = "bfloat16"
  c.encoder.dtype = "bfloat16"  # Stage 1 too: bfloat16 compute over float32 weights and Adam moments
  c.input.max_text_len = 512
  c.adapter.name = "mean"
  c.align.mode = "adapter"
  return c
