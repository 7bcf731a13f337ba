"""Stage 1: pre-train a user encoder on next-item prediction; resumable; sharded from the start.

Shape letters: B batch, L length, E item embedding width, N = B·L.

`train_step(state, batch) -> (state, metrics)` is one `jax.jit` with explicit in/out shardings
(parameters by `parallel.RULES`, batches split over `data` x `fsdp`) and the state donated.
State and the data iterator are checkpointed together every `checkpoint_every` steps and the
run resumes from the latest checkpoint automatically. A non-finite loss stops the run before
anything is saved, so the last checkpoint stays good. At the end the encoder parameters are
exported to `workdir/pretrain/export` for Stage 2.
"""

import dataclasses
import json
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from uqa_jax import metrics
from uqa_jax import parallel
from uqa_jax.data import arrow_io
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.user_model import UserModel
from uqa_jax.train import checkpoint as checkpoint_lib
from uqa_jax.train import nip_loss


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def encoder_config(config) -> EncoderConfig:
  e = config.encoder
  fields = {f.name for f in dataclasses.fields(EncoderConfig)}
  return EncoderConfig(**{k: v for k, v in e.to_dict().items() if k in fields},
                       max_len=config.data.max_len)


def make_model(config, info) -> UserModel:
  dims = dict(schema.OFFICIAL_EMBED_DIMS, **config.pretrain.get("embed_dims", {}))
  return UserModel(encoder_config(config), info["vocab_sizes"], dims, config.encoder.input_variant)


def make_optimizer(p, total_steps: int):
  schedule = optax.warmup_cosine_decay_schedule(0.0, p.learning_rate, min(p.warmup_steps, total_steps),
                                                max(total_steps, 1), end_value=p.learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(p.grad_clip),
                     optax.adamw(schedule, b1=p.betas[0], b2=p.betas[1], weight_decay=p.weight_decay))


def nip_queries_targets(model, params, batch, *, deterministic, rng=None):
  rngs = None if deterministic else {"dropout": rng}
  _, queries_BxLxE, _ = model.apply({"params": params}, batch, deterministic, rngs=rngs)
  table_VxE = model.apply({"params": params}, method="item_table")
  return queries_BxLxE, table_VxE


def loss_fn(model, p, params, batch, rng):
  dropout_rng, negatives_rng = jax.random.split(rng)
  queries, table = nip_queries_targets(model, params, batch, deterministic=False, rng=dropout_rng)
  targets_BxL, weights_BxL = nip_loss.shifted_targets(batch[schema.ITEM_COLUMN], batch["lengths"])
  weights_BxL = weights_BxL * batch["valid"][:, None]
  flat = lambda x: x.reshape(-1, *x.shape[2:])
  if p.loss == "sl":
    return nip_loss.sl_loss(flat(queries), flat(targets_BxL), flat(weights_BxL), table, p.sl_chunk)
  return nip_loss.cl_loss(flat(queries), flat(targets_BxL), flat(weights_BxL), table, negatives_rng,
                          num_negatives=p.cl_negatives, temperature=p.cl_temperature)


def last_step_ranks(model, params, batch, chunk):
  """Ranks of each row's last item given the steps before it (eval rows hold the full sequence)."""
  queries, table = nip_queries_targets(model, params, batch, deterministic=True)
  rows = jnp.arange(queries.shape[0])
  last = jnp.maximum(batch["lengths"] - 1, 1)
  return metrics.target_ranks(queries[rows, last - 1], batch[schema.ITEM_COLUMN][rows, last], table, chunk)


class Trainer:
  def __init__(self, config, workdir, log=print, devices=None):
    self.config, self.log = config, log
    self.p = config.pretrain
    self.data_dir = os.path.join(workdir, "data")
    self.out_dir = os.path.join(workdir, "pretrain")
    self.info = arrow_io.read_dataset_info(self.data_dir)
    self.model = make_model(config, self.info)
    self.mesh = parallel.make_mesh(config.mesh.to_dict(), devices)
    train_rows = self.info["counts"][schema.file_name("pretrain", "train")]
    steps_per_epoch = max(1, train_rows // self.p.batch_size)
    self.total_steps = self.p.steps or self.p.epochs * steps_per_epoch
    self.tx = make_optimizer(self.p, self.total_steps)
    self.pipe = pipeline.PipelineConfig(batch_size=self.p.batch_size, max_len=config.data.max_len,
                                        bag_sizes=tuple(config.data.bag_sizes.to_dict().items()),
                                        seed=config.seed, num_epochs=None)
    self._build_steps()

  def _example_batch(self):
    path = os.path.join(self.data_dir, schema.file_name("pretrain", "train"))
    cfg = dataclasses.replace(self.pipe, shuffle=False)
    return next(iter(pipeline.make_dataset(path, cfg)))

  def _build_steps(self):
    example = jax.tree.map(jnp.asarray, self._example_batch())
    self.has_time = "timestamps" in example
    model, tx, p = self.model, self.tx, self.p

    def init_boxed(rng):
      params = model.init({"params": rng, "dropout": rng}, example)["params"]
      return TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                        rng=jax.random.PRNGKey(self.config.seed + 1))

    abstract = jax.eval_shape(init_boxed, jax.random.PRNGKey(0))
    self.state_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), self.mesh,
                                                       parallel.RULES)
    self.batch_sharding = parallel.logical_sharding(self.mesh, ("batch",))
    batch_shardings = jax.tree.map(lambda _: self.batch_sharding, example)
    self.init = jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=self.state_shardings)

    def train_step(state, batch):
      rng = jax.random.fold_in(state.rng, state.step)
      loss, grads = jax.value_and_grad(lambda prm: loss_fn(model, p, prm, batch, rng))(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
              {"loss": loss, "grad_norm": optax.global_norm(grads)})

    self.train_step = jax.jit(train_step, in_shardings=(self.state_shardings, batch_shardings),
                              out_shardings=(self.state_shardings, None), donate_argnums=0)
    self.eval_ranks = jax.jit(lambda params, batch: last_step_ranks(model, params, batch, p.sl_chunk),
                              in_shardings=(self.state_shardings.params, batch_shardings))

  def evaluate(self, params) -> dict[str, float]:
    path = os.path.join(self.data_dir, schema.file_name("pretrain", "eval"))
    cfg = dataclasses.replace(self.pipe, shuffle=False, num_epochs=1, drop_remainder=False)
    ranks = []
    for batch in pipeline.make_dataset(path, cfg):
      r = np.asarray(self.eval_ranks(params, batch))
      ranks.append(r[batch["valid"] & (batch["lengths"] >= 2)])
    return metrics.retrieval_metrics(np.concatenate(ranks))

  def popularity_baseline(self) -> dict[str, float]:
    """Ranks by training click count; reads the item column batch-wise (one id per step)."""
    def item_column(split):
      path = os.path.join(self.data_dir, schema.file_name("pretrain", split))
      for _, batch in arrow_io.SequenceFile(path).record_batches():
        yield arrow_io.column_views(batch.column(schema.ITEM_COLUMN))

    vocab = self.info["vocab_sizes"]["item"]
    counts = sum(np.bincount(ids, minlength=vocab) for _, _, ids in item_column("train"))
    targets = []
    for steps, bags, ids in item_column("eval"):
      long_enough = np.diff(steps) >= 2
      targets.append(ids[bags[steps[1:][long_enough] - 1]])
    return metrics.retrieval_metrics(metrics.popularity_ranks(counts, np.concatenate(targets)))

  def run(self) -> dict:
    p, log = self.p, self.log
    path = os.path.join(self.data_dir, schema.file_name("pretrain", "train"))
    data = iter(pipeline.make_dataset(path, self.pipe))
    ckpt = checkpoint_lib.Checkpointer(os.path.join(self.out_dir, "checkpoints"), p.max_to_keep)
    latest = ckpt.latest_step()
    if latest is not None:
      abstract = jax.tree.map(lambda s, a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              self.state_shardings, jax.eval_shape(self.init, jax.random.PRNGKey(0)))
      state = ckpt.restore(latest, abstract, data)
      log(f"pretrain: resumed from step {latest} ({self.out_dir}/checkpoints)")
    else:
      state = self.init(jax.random.PRNGKey(self.config.seed))
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"pretrain: {self.config.encoder.name} ({self.config.encoder.input_variant}), "
        f"{n_params:,} parameters, {self.total_steps} steps of batch {p.batch_size}, mesh {dict(self.mesh.shape)}")
    if self.config.encoder.name == "hstu":
      on = self.has_time and encoder_config(self.config).time_buckets > 0
      log(f"pretrain: HSTU time bias {'on' if on else 'off'} "
          f"({'the data carries' if self.has_time else 'no'} click times)")
    start_step = int(state.step)
    start, history = None, []
    for step in range(start_step, self.total_steps):
      state, m = self.train_step(state, next(data))
      loss = float(m["loss"])
      if start is None:  # rates exclude the first step, which compiles
        start, timed_from = time.time(), step + 1
      if not np.isfinite(loss):
        ckpt.close()
        raise FloatingPointError(
            f"pretrain: loss is {loss} at step {step + 1}; stopped without saving, the last good "
            f"checkpoint is step {ckpt.latest_step()} in {self.out_dir}/checkpoints")
      history.append(loss)
      done = step + 1
      if (done % p.log_every == 0 or done == self.total_steps) and done > timed_from:
        rate = (done - timed_from) / (time.time() - start)
        log(f"pretrain: step {done}/{self.total_steps} loss {np.mean(history[-p.log_every:]):.4f} "
            f"{rate:.2f} steps/s ETA {(self.total_steps - done) / rate:.0f}s")
      if done % p.checkpoint_every == 0 and done < self.total_steps:
        ckpt.save(done, state, data)
      if p.eval_every and done % p.eval_every == 0 and done < self.total_steps:
        log("pretrain: eval " + _fmt(self.evaluate(state.params)))
    steps_per_s = (self.total_steps - timed_from) / max(time.time() - start, 1e-9) if start else 0.0
    ckpt.save(self.total_steps, state, data)
    ckpt.close()
    result = {"model": self.evaluate(state.params), "popularity": self.popularity_baseline(),
              "steps_per_s": steps_per_s}
    log("pretrain: final " + _fmt(result["model"]))
    log("pretrain: popularity baseline " + _fmt(result["popularity"]))
    self.export(state.params, result)
    return result

  def export(self, params, result):
    export_dir = os.path.abspath(os.path.join(self.out_dir, "export"))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(export_dir, "params"), jax.device_get(params), force=True)
    checkpointer.wait_until_finished()
    with open(os.path.join(export_dir, "encoder.json"), "w", encoding="utf-8") as f:
      json.dump({"encoder": dataclasses.asdict(encoder_config(self.config)),
                 "input_variant": self.config.encoder.input_variant,
                 "vocab_sizes": self.info["vocab_sizes"], "metrics": result}, f, indent=2)


def _fmt(m: dict) -> str:
  return " ".join(f"{k} {v:.4f}" for k, v in m.items() if k.endswith(("@1", "@10", "@50")))


def run(config, workdir, log=print) -> dict:
  return Trainer(config, workdir, log).run()
