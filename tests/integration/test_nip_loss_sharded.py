"""The SL loss on 8 simulated devices (a subprocess): the sharded item table is read in place."""

import os
import subprocess
import sys

from tests.conftest import ROOT


SHARDED = r"""
import re
import jax, jax.numpy as jnp, numpy as np
from uqa_jax.encoders import nip_loss
from uqa_jax.runtime import parallel
rows, e, n, v = 16384, 16, 256, 16000
k = jax.random.split(jax.random.PRNGKey(0), 3)
q = jax.random.normal(k[0], (n, e)); table = jax.random.normal(k[1], (rows, e))
targets = jax.random.randint(k[2], (n,), 1, v); weights = jnp.ones(n)
f = lambda q, t: jax.value_and_grad(nip_loss.sl_loss, argnums=(0, 3))(q, targets, weights, t, 512, v)
want = jax.jit(f)(q, table)
for shape in ((1, 8, 1), (2, 2, 2), (2, 1, 4)):
  mesh = parallel.make_mesh(dict(zip(parallel.MESH_AXES, shape)))
  rules = parallel.rules()
  tsh, qsh = parallel.logical_sharding(mesh, ("items", "feature_embed")), parallel.logical_sharding(mesh, ("batch",))
  step = parallel.Sharded(f, mesh, rules, in_shardings=(qsh, tsh))
  got = step(jax.device_put(q, qsh), jax.device_put(table, tsh))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert got[1][1].sharding.is_equivalent_to(tsh, 2), got[1][1].sharding  # the gradient is sharded like the table
  hlo = step.lower(q, table).compile().as_text()
  moved = []  # elements in the result of each op that moves data between devices
  for line in hlo.splitlines():
    m = re.search(r"= (?:f32|bf16|s32)\[([0-9,]*)\]\S* (all-gather|all-to-all|collective-permute)", line)
    if m:
      moved.append(int(np.prod([int(d) for d in m.group(1).split(",") if d] or [1])))
  shard = rows * e // (mesh.shape["fsdp"] * mesh.shape["tensor"])
  assert max(moved, default=0) < shard, (shape, moved, shard)
  print(shape, "moved", moved, "shard", shard)
print("ok")
"""


def test_sharded_sl_loss_reads_the_item_table_in_place(tmp_path):
  """On 8 simulated devices with the table sharded along items: the loss and gradients equal one
  device's, the gradient keeps the table's sharding, and no collective moves as much as one shard."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr[-3000:]
