"""The paper's Stage 1 recipe (§4.1.3, Table 5): every block at its dataclass defaults.

25M-parameter encoder (8 layers, d 512, 8 heads; Trm++ unless an encoder is named), the 512 most
recent clicks, batch 256, AdamW lr 1e-4 (100 warm-up steps, cosine decay), 10 epochs, dropout
0.1, softmax NIP loss over all items. The defaults live in the dataclasses (`DataConfig`,
`InputConfig`, `LLMSource`, `EncoderConfig`, `PretrainConfig`), so this file only names them;
`configs/<encoder>.py` set each encoder's paper size on top, `configs/default.py` shrinks it
to laptop scale. Sized for accelerators: on a 2-core CPU one step takes minutes
(`benchmarks/encoders.py`).

  python -m uqa_jax.main --config configs/paper.py            # Trm++
  python -m uqa_jax.main --config configs/paper.py:hstu       # another encoder, workdir/paper-hstu

It prints the data stage's statistics and checker verdict, then training loss, steps/s and ETA,
then Recall/NDCG@{1,10,50} of the held-out next item next to the popularity baseline.
"""

import ml_collections

from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config.blocks import block
from uqa_jax.config.recipes import AlignConfig, DiagnoseConfig, EvaluateConfig, PretrainConfig, ReportConfig
from uqa_jax.data.config import DataConfig
from uqa_jax.data.pipeline import InputConfig
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.llm.assets import LLMSource
from uqa_jax.runtime import parallel


def get_config(encoder: str = "trmpp") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ("data", "pretrain")  # Stage 1; configs/uqabench.py and configs/default.py run Stages 1-3
  c.restart = ""  # a stage name: delete that stage's outputs and all after it, then run
  c.note = ""  # printed when the run ends: what its scale means (configs/default.py says how it differs from the full run)
  c.data = block(DataConfig)  # what the data set is: changing it rebuilds the data
  c.input = block(InputConfig)  # how batches are cut from it: never rebuilds the data
  c.llm = block(LLMSource)
  c.encoder = block(EncoderConfig, exclude=("max_len",), name=encoder)  # max_len = data.max_len
  c.pretrain = block(PretrainConfig)
  c.align = block(AlignConfig)  # Stage 2 (configs/uqabench.py runs it with the paper's LLM)
  c.adapter = block(AdapterConfig, exclude=("d_llm", "embed_rms"))  # derived from the LLM
  c.evaluate = block(EvaluateConfig)  # Stage 3: generation, scoring, controls, floors
  c.diagnose = block(DiagnoseConfig)  # where user information is lost: data ceiling, encoder probe
  c.report = block(ReportConfig)
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1: the other devices
  # logical axis -> mesh axes for parameters and activations (uqa_jax.runtime.parallel.RULES), e.g.
  # --config.sharding_rules.items='("tensor",)'
  c.sharding_rules = ml_collections.ConfigDict({name: axes for name, axes in parallel.RULES})
  return c
