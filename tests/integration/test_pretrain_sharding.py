"""On 8 simulated CPU devices, meshes (8,1,1), (2,4,1), (1,8,1), (2,2,2): Trm++ and HSTU Stage 1
steps and the Stage 2 step (full fine-tuning, tiny LLM) give the one-device losses within 1e-5,
and every parameter carries the sharding the rules give its logical names.

Runs in a subprocess: the device count is fixed when JAX starts.
"""

import os
import subprocess
import sys

import pytest
from tests.conftest import ROOT


SCRIPT = r"""
import sys
import flax.linen as nn
import jax, numpy as np
from jax.sharding import NamedSharding
from tests import tiny_llm
from tests.conftest import tiny_llm_config
from uqa_jax import stages
from uqa_jax.data import pipeline
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.runtime import parallel
from uqa_jax.stages import align, pretrain
assert jax.device_count() == 8
workdir, llm_dir = sys.argv[1], sys.argv[2]
MESHES = ((1, 1, 1), (8, 1, 1), (2, 4, 1), (1, 8, 1), (2, 2, 2))
tiny_llm.make_dir(llm_dir, tokenizer_lib.load_tokenizer("smollm2"))
config = tiny_llm_config(llm_dir)
for stage in ("data", "pretrain"):
  stages.run(stage, config, workdir, log=lambda *_: None)


def check_shardings(tree, boxed, mesh, where):
  # every parameter's sharding is the one the rules give its logical names (an independent lookup)
  table = dict(parallel.RULES)
  flat = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))[0]
  arrays = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  assert len(flat) == len(arrays), (where, len(flat), len(arrays))
  for path, leaf in flat:
    spec = [table[n] if n in table else None for n in leaf.names]
    spec = [None if not a else (a[0] if len(a) == 1 else a) for a in spec]
    want = NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    got = arrays[path].sharding
    assert got.is_equivalent_to(want, len(leaf.names)), (where, jax.tree_util.keystr(path), got.spec, want.spec)


def mesh_config(config, shape):
  config.mesh = dict(zip(parallel.MESH_AXES, shape))
  return jax.devices()[:1] if shape == (1, 1, 1) else None


for name in ("trmpp", "hstu"):
  losses = {}
  for shape in MESHES:
    c = tiny_llm_config(llm_dir)
    c.encoder.name, c.encoder.num_heads = name, 4
    parts = pretrain.build(c, workdir, devices=mesh_config(c, shape))
    state = parts.init(jax.random.PRNGKey(0))
    data = iter(pipeline.make_dataset(f"{workdir}/data/pretrain_data_train.arrow", parts.pipe))
    out = []
    for _ in range(3):
      state, m = parts.step(state, next(data))
      out.append(float(m["loss"]))
    losses[shape] = out
    boxed = jax.eval_shape(lambda r, b: parts.model.init({"params": r, "dropout": r}, b),
                           jax.random.PRNGKey(0), parts.example)["params"]
    check_shardings(state.params, boxed, parts.mesh, (name, shape))
  for shape, out in losses.items():
    assert np.allclose(out, losses[(1, 1, 1)], rtol=0, atol=1e-5), (name, shape, out, losses[(1, 1, 1)])
  print(name, losses)

losses = {}
for shape in MESHES:  # Stage 2: full fine-tuning, so the LLM's parameters are in the sharded state
  c = tiny_llm_config(llm_dir)
  c.align.mode, c.align.batch_size, c.align.steps, c.align.schedule = "full", 8, 3, "constant"
  parts = align.build(c, workdir, devices=mesh_config(c, shape))
  state = parts.init(None)
  data = iter(pipeline.make_dataset(f"{workdir}/data/align_data_train.arrow", parts.pipe, tokenizer=parts.tokenizer))
  out = []
  for _ in range(3):
    state, m = parts.step(state, next(data))
    out.append(float(m["loss"]))
  losses[shape] = out
  llm_boxed = jax.eval_shape(lambda r: parts.model.llm.init(r, jax.numpy.zeros((1, 2), "int32"),
      positions=jax.numpy.zeros((1, 2), "int32"), kv_mask=jax.numpy.ones((1, 2), "int32")), jax.random.PRNGKey(0))
  check_shardings(state.params["llm"], llm_boxed["params"], parts.mesh, ("align", shape))
for shape, out in losses.items():
  assert np.allclose(out, losses[(1, 1, 1)], rtol=0, atol=1e-5), ("align", shape, out, losses[(1, 1, 1)])
print("align", losses)
print("ok")
"""


@pytest.mark.slow  # about 4 minutes on 2 cores: `make test-slow`
def test_sharded_training_steps_equal_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "work"), str(tmp_path / "llm")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr[-3000:]
