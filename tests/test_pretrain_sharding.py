"""On 8 simulated CPU devices, Trm++ and HSTU training steps give the single-device losses.

Runs in a subprocess: the device count is fixed when JAX starts.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys
import jax, numpy as np
from configs import smoke
from uqa_jax import stages
from uqa_jax.data import pipeline
from uqa_jax.stages import pretrain
assert jax.device_count() == 8
workdir = sys.argv[1]
config = smoke.get_config()
stages.run("data", config, workdir, log=lambda *_: None)
for name in ("trmpp", "hstu"):
  losses = {}
  for shape in ((1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2)):
    config = smoke.get_config()
    config.encoder.name = name
    config.encoder.num_heads = 4
    config.mesh = dict(zip(("data", "fsdp", "tensor"), shape))
    devices = jax.devices()[:1] if shape == (1, 1, 1) else None
    parts = pretrain.build(config, workdir, devices=devices)
    state = parts.init(jax.random.PRNGKey(0))
    data = iter(pipeline.make_dataset(f"{workdir}/data/pretrain_data_train.arrow", parts.pipe))
    out = []
    for _ in range(3):
      state, m = parts.step(state, next(data))
      out.append(float(m["loss"]))
    losses[shape] = out
    if shape == (2, 2, 2):  # parameters carry the shardings the rules assign
      table = state.params["embed"]["item_table"].sharding.spec
      assert tuple(table) == ("tensor", None), table
      kernel = state.params["encoder"]["layers"]["o"]["kernel"].sharding.spec
      assert tuple(kernel) == (None, "tensor", "fsdp"), kernel
  for shape, out in losses.items():
    assert np.allclose(out, losses[(1, 1, 1)], rtol=0, atol=1e-5), (name, shape, out, losses[(1, 1, 1)])
  print(name, losses)
print("ok")
"""


@pytest.mark.slow  # about 3 minutes on 2 cores: `make test-slow`
def test_sharded_training_steps_equal_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr[-3000:]
