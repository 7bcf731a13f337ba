"""The paper's setting (`configs/uqabench.py`) on Qwen2.5-3B or 7B-Instruct, sharded over fsdp x tensor.

  python -m uqa_jax.main --config configs/qwen.py:7b \
      --config.data.path=/data/uqabench --config.llm.model=/models/Qwen2.5-7B-Instruct
  python -m uqa_jax.tools.plan --config configs/qwen.py:7b --stage align --llm qwen2.5-7b \
      --config.data.source=synthetic --nosearch        # the step's memory here, no weights needed

Eight devices as (fsdp 2, tensor 4) (`data` takes the rest on a larger slice): the LLM's
weights split over all eight (its width over fsdp, heads, MLP and vocabulary over tensor), the
batch over fsdp. Qwen2.5-3B has 2 key/value heads, which do not split over tensor 4: its rule
`kv_heads` (and `act_kv_heads`) are replicated, its k/v projections (1.2% of its
weights) are then whole on every device. The LLM computes in bfloat16 and, since adapter-only alignment never
updates it, is also stored in bfloat16 (`llm.param_dtype`): 15.2 GB for 7B instead of 30.5 GB,
loaded tensor by tensor straight into its shards. `--config.align.mode=full` needs
`--config.llm.param_dtype=float32` (bfloat16 weights would round a 1e-6 update away).
Per-device memory of these steps: README, "Scale" (`benchmarks/memory.py --align`). The tensor
axis lies within a process: under `launch/slurm.sh` use `PER=host` (one process per GPU would
put `tensor` across processes, which the first batch refuses).
"""

from configs import uqabench
from uqa_jax.llm import config as llm_config

# size -> (the preset with its config.json values, where the weights are expected)
SIZES = {
    "3b": ("qwen2.5-3b", "models/Qwen2.5-3B-Instruct"),
    "7b": ("qwen2.5-7b", "models/Qwen2.5-7B-Instruct"),
}
MESH = {"data": -1, "fsdp": 2, "tensor": 4}


def get_config(size: str = "7b"):
  if size not in SIZES:
    raise ValueError(f"configs/qwen.py:{size}: unknown size; expected one of {', '.join(SIZES)}")
  preset, path = SIZES[size]
  c = uqabench.get_config()
  c.llm.model = path
  c.llm.param_dtype = "bfloat16"
  c.mesh.update(MESH)
  c.llm.remat = True  # 36 layers x 32 rows x 512 tokens of activations otherwise
  if llm_config.PRESETS[preset].num_kv_heads % MESH["tensor"]:
    c.sharding_rules.kv_heads = c.sharding_rules.act_kv_heads = ()
  return c
