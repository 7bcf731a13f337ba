"""Stage 1: pre-train a user encoder on next-item prediction; resumable; sharded from the start.

Shape letters: B batch, L length, E item embedding width, N = B·L.

`train_step(state, batch, *, model, tx, cfg) -> (state, metrics)` is a pure module-level
function; `build` jits it with explicit in/out shardings (parameters by `parallel.RULES`
and `config.sharding_rules`,
batches split over `data` x `fsdp`) and the state donated. `train_loop` drives it without
waiting for the device each step, checkpoints state and data iterator together every
`checkpoint_every` steps, and refuses to save after a non-finite loss or gradient norm. At
the end the run evaluates next-item retrieval next to the popularity baseline and exports the
model with `encoders.export.save` to `workdir/pretrain/export` for Stage 2.
"""

import dataclasses
import functools
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from uqa_jax import encoders
from uqa_jax.config import blocks
from uqa_jax.config.recipes import PretrainConfig
from uqa_jax.data import arrow_io
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.data.config import DataConfig
from uqa_jax.encoders import config as encoder_lib
from uqa_jax.encoders import export
from uqa_jax.encoders import nip_loss
from uqa_jax.encoders import user_model
from uqa_jax.encoders.config import EncoderConfig
from uqa_jax.encoders.user_model import UserModel
from uqa_jax.evaluation import retrieval
from uqa_jax.runtime import checkpoint as checkpoint_lib
from uqa_jax.runtime import distributed
from uqa_jax.runtime import keys
from uqa_jax.runtime import parallel
from uqa_jax.runtime import planner
from uqa_jax.runtime import scalars
from uqa_jax.runtime import workdir as workdir_lib
from uqa_jax.stages import train_loop

BLOCKS = ("input", "encoder", "pretrain", "mesh", "sharding_rules")
UPSTREAM = ("data",)
VERSION = 1  # of what it computes; the rule for bumping it: uqa_jax/stages/__init__.py
PROCESSES = "all"  # several JAX processes run it together: the batch is global (uqa_jax.runtime.distributed)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def fingerprint(config) -> dict:
  parallel.config_rules(config)  # checked here (before any work); sharding changes no number: not stored
  p = blocks.read(config, PretrainConfig)
  embed_dims(config)  # checked here, before any work
  unused = () if p.loss == "cl" else ("cl_negatives", "cl_temperature")
  unused += ("epochs",) if p.steps else ()
  e = blocks.read(config, EncoderConfig)
  return {"seed": config.seed,
          "encoder": blocks.fingerprint(e, keep=encoder_lib.COMMON + encoders.reads(e.name)),
          "pretrain": {k: v for k, v in blocks.fingerprint(p).items() if k not in unused},
          "input": {"bag_sizes": blocks.read(config, pipeline.InputConfig).bag_sizes}}


def embed_dims(config) -> dict:
  """Each table's embedding width: the official ones, with `pretrain.embed_dims` over them (an
  unknown table is a ConfigError naming it)."""
  dims = blocks.read(config, PretrainConfig).embed_dims
  try:
    user_model.check_embed_dims(dims)
  except ValueError as err:
    raise blocks.ConfigError(f"config pretrain: {err}") from None
  return dict(schema.OFFICIAL_EMBED_DIMS, **dims)


def make_model(config, info) -> UserModel:
  return UserModel(blocks.read(config, EncoderConfig), info["vocab_sizes"], embed_dims(config))


def make_schedule(p: PretrainConfig, total_steps: int):
  warmup = warmup_steps(p, total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, p.learning_rate, warmup, max(total_steps, warmup + 1),
                                            end_value=p.learning_rate * 0.1)


def make_optimizer(p: PretrainConfig, total_steps: int):
  return optax.chain(optax.clip_by_global_norm(p.grad_clip),
                     optax.adamw(make_schedule(p, total_steps), b1=p.betas[0], b2=p.betas[1],
                                 weight_decay=p.weight_decay))


def warmup_steps(p: PretrainConfig, total_steps: int) -> int:
  """The warm-up, cut to leave at least one decay step in a run shorter than it (the run says so)."""
  return min(p.warmup_steps, max(total_steps - 1, 0))


def nip_queries_targets(model, params, batch, *, deterministic, rng=None):
  rngs = None if deterministic else {"dropout": rng}
  _, queries_BxLxE, _ = model.apply({"params": params}, batch, deterministic, rngs=rngs)
  table_VxE = model.apply({"params": params}, method="item_table")
  return queries_BxLxE, table_VxE


def loss_fn(model, p: PretrainConfig, params, batch, rng):
  dropout_rng, negatives_rng = jax.random.split(rng)
  queries, table = nip_queries_targets(model, params, batch, deterministic=False, rng=dropout_rng)
  targets_BxL, weights_BxL = nip_loss.shifted_targets(batch[schema.ITEM_COLUMN], batch["lengths"])
  weights_BxL = weights_BxL * batch["valid"][:, None]
  flat = lambda x: x.reshape(-1, *x.shape[2:])
  if p.loss == "sl":  # the padded table: it shards evenly, and the loss reads it in place
    rows = model.apply({"params": params}, method="item_rows")
    return nip_loss.sl_loss(flat(queries), flat(targets_BxL), flat(weights_BxL), rows, p.sl_chunk,
                            num_items=table.shape[0])
  return nip_loss.cl_loss(flat(queries), flat(targets_BxL), flat(weights_BxL), table, negatives_rng,
                          num_negatives=p.cl_negatives, temperature=p.cl_temperature,
                          chunk=p.sl_chunk)


def step_rng(state: TrainState) -> jax.Array:
  """The randomness (dropout, sampled negatives) of the step that `state` is about to take."""
  return jax.random.fold_in(state.rng, state.step)


def train_step(state: TrainState, batch, *, model, tx, cfg: PretrainConfig, schedule=None):
  """One AdamW step on the NIP loss -> (state, {"loss", "grad_norm", "param_norm", and the step's
  "learning_rate" when `schedule` is given}), on the device.

  The parameter norm is of the parameters *after* the update, so the loop's finite check also
  catches an update that overflowed them although the loss and gradient were finite.
  """
  rng = step_rng(state)
  loss, grads = jax.value_and_grad(lambda prm: loss_fn(model, cfg, prm, batch, rng))(state.params)
  with jax.named_scope("optimizer"):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
  if schedule is not None:
    metrics["learning_rate"] = schedule(state.step)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def last_step_ranks(params, batch, *, model, cfg: PretrainConfig):
  """(ranks [B] of each row's last item given the steps before it, [B] whether the row counts:
  a valid row with two steps or more); eval rows hold the full sequence."""
  queries, table = nip_queries_targets(model, params, batch, deterministic=True)
  rows = jnp.arange(queries.shape[0])
  last = jnp.maximum(batch["lengths"] - 1, 1)
  ranks = retrieval.target_ranks(queries[rows, last - 1], batch[schema.ITEM_COLUMN][rows, last], table,
                               cfg.sl_chunk)
  return ranks, batch["valid"] & (batch["lengths"] >= 2)


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything a pretrain run (or a test) needs, built once from the config."""
  cfg: PretrainConfig
  model: UserModel
  mesh: Any
  pipe: pipeline.InputConfig
  total_steps: int
  has_time: bool
  state_shardings: Any
  example: Any  # a batch's shapes and dtypes (ShapeDtypeStructs; the planner varies its batch size)
  batch_shardings: Any
  init: Any  # PRNGKey -> TrainState, sharded
  step: Any  # (state, batch) -> (state, metrics), jitted, state donated
  eval_ranks: Any  # (params, batch) -> ranks [B], jitted

  def abstract_state(self):
    """The TrainState's shapes, dtypes and shardings (nothing allocated)."""
    return parallel.abstract(jax.eval_shape(self.init, keys.abstract()), self.state_shardings)

  def target(self) -> planner.Target:
    """The step for the memory planner (shapes only)."""
    return planner.Target("pretrain", self.step, self.abstract_state(), (), self.example, self.batch_shardings,
                          self.mesh, self.cfg.batch_size,
                          () if self.model.cfg.remat else ("--config.encoder.remat=True",))


def build(config, workdir: str, devices=None) -> Parts:
  p = blocks.read(config, PretrainConfig)
  data_dir = workdir_lib.data_dir(workdir)
  info = arrow_io.read_dataset_info(data_dir)
  model = make_model(config, info)
  mesh = parallel.make_mesh(config.mesh.to_dict(), devices)
  train_rows = info["counts"][schema.file_name("pretrain", "train")]
  total_steps = p.total_steps(train_rows)
  tx = make_optimizer(p, total_steps)
  pipe = blocks.read(config, pipeline.InputConfig).for_run(
      batch_size=p.batch_size, max_len=blocks.read(config, DataConfig).max_len, seed=config.seed,
      num_epochs=None)
  path = os.path.join(data_dir, schema.file_name("pretrain", "train"))
  # host arrays: the init reads only their shapes (device arrays would each cost an executable)
  example = jax.tree.map(np.asarray, next(iter(pipeline.make_dataset(path, dataclasses.replace(pipe, shuffle=False, workers=0)))))

  def init_boxed(rng):
    params = model.init({"params": rng, "dropout": rng}, example)["params"]
    return TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(config.seed + 1))

  abstract = jax.eval_shape(init_boxed, keys.abstract())
  axis_rules = parallel.config_rules(config)
  state_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, axis_rules)
  batch_sh = jax.tree.map(lambda _: parallel.logical_sharding(mesh, ("batch",), axis_rules), example)
  step = parallel.Sharded(functools.partial(train_step, model=model, tx=tx, cfg=p,
                                            schedule=make_schedule(p, total_steps)), mesh, axis_rules,
                          in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None), donate_argnums=0)
  eval_ranks = parallel.Sharded(functools.partial(last_step_ranks, model=model, cfg=p), mesh, axis_rules,
                                in_shardings=(state_sh.params, batch_sh),  # replicated out: every process reads all
                                out_shardings=parallel.logical_sharding(mesh, (), axis_rules))
  return Parts(cfg=p, model=model, mesh=mesh, pipe=pipe, total_steps=total_steps,
               has_time="timestamps" in example, state_shardings=state_sh,
               example=jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example),
               batch_shardings=batch_sh,
               init=parallel.Sharded(lambda rng: nn.unbox(init_boxed(rng)), mesh, axis_rules,
                                     out_shardings=state_sh),
               step=step, eval_ranks=eval_ranks)


def evaluate(parts: Parts, params, data_dir: str) -> dict[str, float]:
  path = os.path.join(data_dir, schema.file_name("pretrain", "eval"))
  ranks = []
  for r, keep in train_loop.eval_batches(lambda batch: parts.eval_ranks(params, batch), path, parts.pipe,
                                         parts.batch_shardings):
    ranks.append(r[keep])
  return retrieval.retrieval_metrics(np.concatenate(ranks))


def run(config, workdir: str, log=print) -> dict:
  started = time.time()
  parts = build(config, workdir)
  p, data_dir = parts.cfg, workdir_lib.data_dir(workdir)
  out_dir = os.path.join(workdir, "pretrain")
  data = distributed.GlobalBatches(
      iter(pipeline.make_dataset(os.path.join(data_dir, schema.file_name("pretrain", "train")), parts.pipe)),
      parts.batch_shardings, prefetch=2)
  # a step that cannot fit the devices stops here, before anything is allocated
  planner.check(parts.target(), log, memory=planner.parse_memory(p.device_memory))
  ckpt = checkpoint_lib.Checkpointer(os.path.join(out_dir, "checkpoints"), p.max_to_keep)
  curves = scalars.Scalars(scalars.logdir(out_dir))
  timings = {}
  try:
    state = train_loop.start(ckpt, parts.init, parts.state_shardings, data, config.seed, log, "pretrain")
    curves.resume_at(int(state.step))
    e = parts.model.cfg
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"pretrain: {e.name} ({e.input_variant}), {n_params:,} parameters, {parts.total_steps} steps of "
        f"batch {p.batch_size}, mesh {dict(parts.mesh.shape)}")
    if warmup_steps(p, parts.total_steps) < p.warmup_steps:
      log(f"pretrain: note: {parts.total_steps} steps are fewer than warmup_steps={p.warmup_steps}; "
          f"the warm-up is cut to {warmup_steps(p, parts.total_steps)} steps")
    _report_truncation(data_dir, blocks.read(config, pipeline.InputConfig).bag_sizes, log)
    if e.name == "hstu":
      on = parts.has_time and e.time_buckets > 0
      log(f"pretrain: HSTU time bias {'on' if on else 'off'} "
          f"({'the data carries' if parts.has_time else 'no'} click times)")
    curve = []
    state, steps_per_s = train_loop.run(
        parts.step, state, data, total_steps=parts.total_steps, ckpt=ckpt, cfg=p, log=log, name="pretrain",
        evaluate=lambda s: evaluate(parts, s.params, data_dir), fmt=_fmt, curve=curve, scalars=curves,
        timings=timings, started=started, batch_size=p.batch_size)
    final = evaluate(parts, state.params, data_dir)
    curves.write(parts.total_steps, final, prefix="eval/")
  finally:
    ckpt.close()
    curves.close()
    data.close()
  result = {"model": final,
            "popularity": retrieval.popularity_baseline(
                os.path.join(data_dir, schema.file_name("pretrain", "train")),
                os.path.join(data_dir, schema.file_name("pretrain", "eval")), parts.model.vocab_sizes["item"]),
            "steps_per_s": steps_per_s, **timings,
            "examples_per_s": None if steps_per_s is None else steps_per_s * p.batch_size,
            "parameters": n_params,  # all of the user model's, item tables included
            "encoder_parameters": sum(x.size for x in jax.tree.leaves(state.params["encoder"])),  # the backbone
            "loss_curve": curve}  # [step, mean training loss since the last progress line], this run's steps
  log("pretrain: final " + _fmt(result["model"]))
  log("pretrain: popularity baseline " + _fmt(result["popularity"]))
  export.save(os.path.join(out_dir, "export"), parts.model, distributed.host_copy(state.params),
              has_time=parts.has_time, extra={"metrics": result})
  return result


def finish(config, workdir: str, log=print) -> None:
  """A finished Stage 1 keeps of its checkpoints what `pretrain.keep_checkpoints` says."""
  checkpoint_lib.prune(os.path.join(workdir, "pretrain", "checkpoints"),
                       blocks.read(config, PretrainConfig).keep_checkpoints, log,
                       key="pretrain.keep_checkpoints")


def _report_truncation(data_dir: str, bag_sizes: dict, log) -> None:
  """Batches keep the first K ids of a wider bag: say how often, so it is never silent."""
  path = os.path.join(data_dir, schema.file_name("pretrain", "train"))
  for column, (cut, total, widest) in pipeline.bag_truncation(path, bag_sizes.items()).items():
    log(f"pretrain: note: {cut:,} of {total:,} bags in {column} are wider than its bag size "
        f"{bag_sizes[column]} (widest {widest}); batches keep the first {bag_sizes[column]} ids "
        f"(raise input.bag_sizes.{column} to keep more)")


def _fmt(m: dict) -> str:
  return " ".join(f"{k} {v:.4f}" for k, v in m.items() if k.endswith(("@1", "@10", "@50")))
