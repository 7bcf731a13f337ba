"""The host input pipeline off the main thread: grain worker processes and device prefetch give
the batches the in-process pipeline gives, in order, and resume from the same position."""

import dataclasses
import json
import os

import jax
import numpy as np

from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.runtime import distributed

CFG = pipeline.InputConfig(batch_size=8, max_len=16, num_epochs=None, seed=3, workers=0)


def _batches(en_dir, workers, state=None, n=5):
  it = iter(pipeline.make_dataset(os.path.join(en_dir, schema.file_name("pretrain", "train")),
                                  dataclasses.replace(CFG, workers=workers), process_index=0, process_count=1))
  if state is not None:
    it.set_state(state)
  try:
    return [next(it) for _ in range(n)], it.get_state()
  finally:
    it.close()


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_worker_processes_give_the_in_process_batches_and_resume_with_any_worker_count(en_dir):
  inline, _ = _batches(en_dir, 0, n=7)
  workers, state = _batches(en_dir, 2, n=3)
  _assert_same(workers, inline[:3])
  assert json.loads(state) == {"next_index": 3}  # the format grain's own iterator wrote
  _assert_same(_batches(en_dir, 0, state, n=4)[0], inline[3:])
  _assert_same(_batches(en_dir, 1, state, n=4)[0], inline[3:])


def test_device_prefetch_saves_the_position_of_the_last_batch_handed_out(en_dir):
  path = os.path.join(en_dir, schema.file_name("pretrain", "train"))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  plain = distributed.GlobalBatches(iter(pipeline.make_dataset(path, CFG, process_index=0, process_count=1)), sharding)
  ahead = distributed.GlobalBatches(iter(pipeline.make_dataset(path, CFG, process_index=0, process_count=1)), sharding,
                                    prefetch=3)
  want = [jax.device_get(next(plain)) for _ in range(6)]
  got = [jax.device_get(next(ahead)) for _ in range(2)]
  state = ahead.get_state()
  assert json.loads(state) == {"next_index": 2}  # the thread has read further; the checkpoint must not skip those
  ahead.set_state(state)
  got += [jax.device_get(next(ahead)) for _ in range(4)]
  _assert_same(got, want)
  ahead.close()
