"""On 8 simulated CPU devices the sharded decoder gives the single-device logits.

Runs in a subprocess: the device count is fixed when JAX starts.
"""

import os
import subprocess
import sys

from tests.conftest import ROOT


SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from uqa_jax.llm import model as model_lib
from uqa_jax.llm.config import LLMConfig
from uqa_jax.runtime import parallel
assert jax.device_count() == 8, jax.devices()
cfg = LLMConfig(vocab_size=128, d_model=64, d_ff=128, num_layers=2, num_heads=8, num_kv_heads=4,
                head_dim=8, rope_theta=10000.0, rms_eps=1e-6, qkv_bias=True, tie_embeddings=False)
model = model_lib.Decoder(cfg)
ids = jnp.asarray(np.random.default_rng(0).integers(0, 128, size=(8, 16)))
mask = jnp.ones((8, 16), jnp.int32).at[1, :5].set(0)
pos = model_lib.positions_from_mask(mask)
boxed = model.init(jax.random.PRNGKey(0), ids, positions=pos, kv_mask=mask)["params"]
import flax.linen as nn
params = nn.unbox(boxed)
forward = lambda p, i, po, m: model.apply({"params": p}, i, positions=po, kv_mask=m)[0]
want = np.asarray(jax.jit(forward)(params, ids, pos, mask))
for shape in ({"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 2, "tensor": 4}, {"fsdp": 8}):
  mesh = parallel.make_mesh(shape)
  shardings = parallel.param_shardings(mesh, boxed)
  sharded = parallel.shard_params(params, shardings)
  batch = parallel.logical_sharding(mesh, ("batch", "length"))
  out = parallel.logical_sharding(mesh, ("batch", "length", "vocab"))
  step = jax.jit(forward, in_shardings=(shardings, batch, batch, batch), out_shardings=out)
  got = np.asarray(step(sharded, ids, pos, mask))
  err = np.abs(got - want).max()
  assert err < 1e-5, (shape, err)
  # Each parameter carries the sharding the rules assign (layers axis replicated).
  q = sharded["layers"]["attn"]["q_kernel"].sharding.spec
  assert tuple(q) == (None, "fsdp", "tensor", None), (shape, q)
  assert tuple(sharded["embedding"].sharding.spec) == ("tensor", "fsdp")
  assert tuple(sharded["layers"]["mlp"]["down_kernel"].sharding.spec) == (None, "tensor", "fsdp")
  assert tuple(sharded["layers"]["attn_norm"]["scale"].sharding.spec) in ((), (None,), (None, None))
  print(shape, "max abs err", err, "q_kernel", q)
print("ok")
"""


def test_sharded_forward_equals_single_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr[-3000:]
