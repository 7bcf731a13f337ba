"""The official UQABench data (Kaggle download), Chinese questions, Qwen2.5 tokenizer.

  python -m uqa_jax.main --config configs/official.py \
      --config.data.path=/data/uqabench --config.llm.model=/models/Qwen2.5-3B-Instruct \
      --workdir workdir/official

The data stage derives dataset_info.json (official vocab sizes, zh), links the four files
into the workdir and runs the checker over them; Stage 1 then pre-trains the paper's 25M Trm++
(configs/paper.py) and prints Recall/NDCG next to the popularity baseline.
`configs/uqabench.py` adds Stage 2 (the paper's alignment setting).
"""

from configs import paper


def get_config():
  c = paper.get_config()
  c.data.source = "official"
  c.data.language = "zh"
  return c
