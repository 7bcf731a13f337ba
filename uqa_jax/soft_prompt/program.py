"""Stage 2's training program: the guarded step, the eval rows, their shardings, and (for a run)
the loaded weights, built from shapes first.

`program(config, model, ...)` makes everything from shapes alone: the memory planner
(`plan_target`) compiles its step on abstract arguments before any weight is read. A run then
fills in the weights (`with_weights`), and the same `Program` drives the loop.

Shape letters as in `soft_prompt/model.py`.
"""

import dataclasses
import functools
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from uqa_jax import adapters
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config import blocks
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.encoders import export as encoder_export
from uqa_jax.llm import model as llm_model
from uqa_jax.llm.assets import LLMSource
from uqa_jax.runtime import keys
from uqa_jax.runtime import parallel
from uqa_jax.runtime import planner
from uqa_jax.soft_prompt import contrast
from uqa_jax.soft_prompt import model as uqa_model
from uqa_jax.soft_prompt import optimizer


@flax.struct.dataclass
class AlignState:
  step: jax.Array
  params: Any  # the trainable groups only: {"adapter": ..., ["llm": ..., "encoder": ...]}
  opt_state: Any
  bad_in_row: jax.Array  # skipped steps since the last good one
  skipped: jax.Array  # skipped steps in all


def soft_token_norm(model, params, batch):
  """Mean L2 norm of the batch's soft tokens (to compare with the LLM's token embeddings); 0 without any."""
  if not model.num_soft:
    return jnp.float32(0.0)
  return jnp.mean(jnp.linalg.norm(model.soft_tokens(params, batch), axis=-1))


def train_step(state: AlignState, frozen, batch, *, model, tx, loss_fn=uqa_model.answer_loss, schedules=None,
               llm_frozen=None):
  """One guarded AdamW step -> (state, metrics), on the device.

  `frozen` holds the groups that do not train; they are an input, never an output, so they
  cannot change. A non-finite loss, gradient norm or updated-parameter norm keeps the old
  parameters and optimizer state and counts the step as skipped (as `optax.apply_if_finite`
  does: the schedule's step count then stays behind `state.step` by the skipped steps).
  `llm_frozen` (`optimizer.llm_frozen`: applied updates -> bool) marks a trained LLM's frozen
  phases: there the gradient is taken of the other groups only (the LLM's weight gradients,
  about a third of a step's work, are not computed; its gradient is zeros, as the optimizer's
  first link would make it), so the step compiles both gradients and runs one.
  """
  params_in = state.params
  applied = state.step - state.skipped  # the updates so far: the schedules' step (skipped steps do not count)
  loss_of = lambda p: loss_fn({**frozen, **p}, batch, model=model)
  if llm_frozen is None:
    loss, grads = jax.value_and_grad(loss_of)(params_in)
  else:
    def without_llm(p):
      rest = {g: v for g, v in p.items() if g != "llm"}
      loss, grads = jax.value_and_grad(lambda r: loss_of({**r, "llm": p["llm"]}))(rest)
      return loss, {**grads, "llm": jax.tree.map(jnp.zeros_like, p["llm"])}
    loss, grads = jax.lax.cond(llm_frozen(applied), without_llm, jax.value_and_grad(loss_of), params_in)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  bad_in_row = jnp.where(ok, 0, state.bad_in_row + 1)
  state = state.replace(step=state.step + 1, params=keep(params, state.params),
                        opt_state=keep(opt_state, state.opt_state), bad_in_row=bad_in_row,
                        skipped=state.skipped + (~ok).astype(jnp.int32))
  # The soft tokens of this step's loss (same inputs: XLA computes them once).
  soft_norm = soft_token_norm(model, {**frozen, **jax.lax.stop_gradient(params_in)}, batch)
  rates = {f"learning_rate/{g}": s(applied) for g, s in (schedules or {}).items()}
  return state, {"loss": loss, "grad_norm": grad_norm, "param_norm": param_norm, "skipped": ~ok,
                 "bad_in_row": bad_in_row, "soft_norm": soft_norm, **rates}


@dataclasses.dataclass(frozen=True)
class Program:
  """The align step, its eval and their shardings, made from shapes alone (`program`); a run's
  weights and inputs are added by `with_weights` (the fields after `eval_nll`, None before)."""
  cfg: AlignConfig
  model: uqa_model.UQAModel
  mesh: Any
  total_steps: int
  inits: dict  # group -> (PRNGKey -> boxed params): each group's shapes, dtypes and logical names
  shardings: dict  # group -> parameter shardings
  trainable: tuple
  state_shardings: Any
  batch_sharding: Any
  init_state: Any  # {trainable group: params} -> AlignState, jitted onto state_shardings
  sharded_step: Any  # parallel.Sharded: (state, frozen, batch) -> (state, metrics), state donated
  eval_nll: Any  # (params, batch) -> (nll [B], tokens [B], task [B], valid [B]) of the global batch, replicated
  # (params, batch) -> (nll [B], nll with the batch's histories rolled by one row [B], tokens [B],
  # valid [B]: the row and the one before it, same [B]: the two histories equal), replicated
  eval_rolled: Any
  # A run's (with_weights):
  pipe: pipeline.InputConfig | None = None
  tokenizer: Any = None
  frozen: Any = None  # the groups that do not train, on the device
  start_params: Any = None  # every group as loaded: host arrays, the frozen LLM on the devices (a trained one: its shapes)
  init: Any = None  # PRNGKey -> AlignState (the key is unused: training starts from the loaded params)
  embed_norm: float | None = None  # mean L2 norm of the LLM's token embeddings
  encoder_export: str | None = None  # the Stage 1 export the encoder came from
  title_fit: dict | None = None  # adapter_init="titles": what the fit saw and how well it fits
  llm_from: dict | None = None  # align.llm_from: the workdir and its LLM's checksum

  def with_weights(self, **run) -> "Program":
    return dataclasses.replace(self, **run)

  def step(self, state, batch):
    """(state, batch) -> (state, metrics): the sharded step with this run's frozen groups."""
    return self.sharded_step(state, self.frozen, batch)

  def params_of(self, state) -> dict:
    """Every group: the trained ones from `state`, the frozen ones as loaded."""
    return {**self.frozen, **state.params}

  def abstract_state(self):
    """The AlignState's shapes, dtypes and shardings (nothing allocated)."""
    boxed = jax.eval_shape(lambda r: {g: self.inits[g](r) for g in self.trainable}, keys.abstract())
    return parallel.abstract(jax.eval_shape(self.init_state, nn.unbox(boxed)), self.state_shardings)

  def abstract_frozen(self):
    return {g: parallel.abstract(nn.unbox(jax.eval_shape(self.inits[g], keys.abstract())), self.shardings[g])
            for g in self.inits if g not in self.trainable}


def check_config(config) -> None:
  """What would stop a run only after Stage 1 and the LLM's loading, checked when the config is
  read (the stage's fingerprint calls this): bfloat16 weights for a full fine-tune."""
  a, source = blocks.read(config, AlignConfig), blocks.read(config, LLMSource)
  if a.mode == "full" and source.param_dtype != "float32":
    raise blocks.ConfigError(
        f"config llm.param_dtype={source.param_dtype!r} with align.mode='full': the LLM trains at "
        f"align.llm_learning_rate={a.llm_learning_rate:g}, and bfloat16 weights (8 bits of mantissa) would round "
        "most of its updates away; a full fine-tune keeps float32 weights (llm.dtype=bfloat16 still computes in "
        "bfloat16)")


def check_processes(config) -> None:
  """For a run that aligns with several processes: chats cut per batch (`input.widths`) would be
  cut differently on each process."""
  widths = tuple(blocks.read(config, pipeline.InputConfig).widths)
  if jax.process_count() > 1 and widths:
    raise blocks.ConfigError(
        f"config input.widths={widths} with {jax.process_count()} processes: it cuts each batch by its "
        "longest chat, which differs between the processes' rows; set it to ()")


def plan_target(prog: Program, pipe: pipeline.InputConfig, data_dir: str, tokenizer) -> planner.Target:
  """Stage 2's step for the memory planner, its batch as the align-train file gives it at the
  full text length (`pipe` with `widths` off)."""
  cfg = dataclasses.replace(pipe, shuffle=False, widths=(), workers=0)
  batch = next(iter(pipeline.make_dataset(os.path.join(data_dir, schema.file_name("align", "train")), cfg,
                                          tokenizer=tokenizer)))
  example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  llm = prog.model.llm.cfg
  hints = () if llm.remat else ("--config.llm.remat=True",)
  hints += () if llm.param_dtype == "bfloat16" or "llm" in prog.trainable else ("--config.llm.param_dtype=bfloat16",)
  return planner.Target("align", prog.sharded_step, prog.abstract_state(), (prog.abstract_frozen(),), example,
                        jax.tree.map(lambda _: prog.batch_sharding, example), prog.mesh, pipe.batch_size, hints)


def program(config, model: uqa_model.UQAModel, has_time: bool, mesh, rows: int,
            loss_fn=uqa_model.answer_loss) -> Program:
  """The align step for `model` on `mesh`; `rows`: align-train rows (the run's length in steps)."""
  a = blocks.read(config, AlignConfig)
  axis_rules = parallel.config_rules(config)
  example_states = (np.zeros((1, 2, model.adapter_width), np.float32), np.ones((1, 2), np.int32))  # host: no executable
  inits = {
      "encoder": lambda r: model.encoder.init({"params": r, "dropout": r},
                                              encoder_export._example_batch(has_time))["params"],
      "adapter": lambda r: model.adapter.init(r, *example_states)["params"],
      "llm": lambda r: llm_model.init_params(model.llm.cfg, r)}
  # Parameter shardings from the modules' logical axis names (the adapter's: replicated by rule).
  shardings = {g: parallel.param_shardings(mesh, jax.eval_shape(f, keys.abstract()), axis_rules)
               for g, f in inits.items()}
  trainable = a.trainable()
  total_steps = a.total_steps(rows)
  optimizer.check_timing(a, total_steps)
  tx = optimizer.make_optimizer(a, total_steps)
  if a.contrast_weight:
    if loss_fn is not uqa_model.answer_loss:
      raise ValueError("align.contrast_weight adds to the answer loss; this caller gave its own loss_fn")
    loss_fn = functools.partial(contrast.contrastive_loss, weight=a.contrast_weight)

  def init_state(params):
    return AlignState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                      bad_in_row=jnp.int32(0), skipped=jnp.int32(0))

  # Optimizer moments take their parameters' logical names, so they shard like them.
  abstract = jax.eval_shape(lambda r: init_state({g: inits[g](r) for g in trainable}), keys.abstract())
  state_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, axis_rules)
  batch_sh = parallel.logical_sharding(mesh, ("batch",), axis_rules)
  frozen_sh = {g: shardings[g] for g in inits if g not in trainable}
  sharded_step = parallel.Sharded(functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn,
                                                    schedules=optimizer.schedules(a, total_steps),
                                                    llm_frozen=optimizer.llm_frozen(a, total_steps)), mesh,
                                  axis_rules, in_shardings=(state_sh, frozen_sh, batch_sh),
                                  out_shardings=(state_sh, None), donate_argnums=0)
  replicated = parallel.logical_sharding(mesh, (), axis_rules)  # out: every process reads all rows
  eval_nll = parallel.Sharded(functools.partial(_eval_rows, model=model), mesh, axis_rules,
                              in_shardings=(shardings, batch_sh), out_shardings=replicated)
  eval_rolled = parallel.Sharded(functools.partial(contrast.gaps, model=model), mesh, axis_rules,
                                 in_shardings=(shardings, batch_sh), out_shardings=replicated)
  return Program(cfg=a, model=model, mesh=mesh, total_steps=total_steps, inits=inits, shardings=shardings, trainable=trainable,
                 state_shardings=state_sh, batch_sharding=batch_sh,
                 # donated: the first state holds the only copy of what trains (a full fine-tune's LLM)
                 init_state=parallel.Sharded(init_state, mesh, axis_rules, out_shardings=state_sh, donate_argnums=0),
                 sharded_step=sharded_step, eval_nll=eval_nll, eval_rolled=eval_rolled)


def _eval_rows(params, batch, *, model):
  """(nll [B], tokens [B]) and the rows' task and valid flags: with several processes each holds
  only its block of the batch's rows, so the host reads them back from the global batch."""
  return (*uqa_model.answer_nll(params, batch, model=model), batch["task"], batch["valid"])


def make_model(config, encoder, llm_cfg, embed_rms: float = 1.0) -> uqa_model.UQAModel:
  """Encoder -> adapter -> LLM (`llm_cfg` at the config's compute and storage dtypes)."""
  check_config(config)
  a, source = blocks.read(config, AlignConfig), blocks.read(config, LLMSource)
  llm = llm_model.Decoder(llm_cfg.replace(dtype=source.dtype, param_dtype=source.param_dtype, remat=source.remat))
  adapter_cfg = blocks.read(config, AdapterConfig, d_llm=llm_cfg.d_model, embed_rms=embed_rms)
  adapter = adapters.get(adapter_cfg.name)(adapter_cfg)
  return uqa_model.UQAModel(encoder, adapter, llm, place=a.place, user=a.user)
