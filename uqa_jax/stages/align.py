"""Stage 2: align a frozen user encoder to the LLM through an adapter's soft tokens.

The Stage 1 export (`workdir/pretrain/export`) is loaded with every tensor checked, the LLM from
`llm.model`; the adapter is built for the LLM's width with its output norm starting at the RMS
of the LLM's token embeddings. Modes (`align.mode`):
  adapter  only the adapter trains; encoder and LLM are not even inputs to the update, so they
           stay bit-identical (the official default)
  full     the LLM trains too, at `align.llm_learning_rate`; the encoder also trains (at
           `align.learning_rate`) when `align.train_encoder`
Controls (`align.user`): `zeros` feeds zeros through the same adapter, `random_encoder` an
untrained encoder of the same architecture (seeded); both get exactly the real run's budget.
The reader diagnostic `oracle_titles` gives the adapter, instead of encoder states, each click's
mean LLM embedding of its title (`uqa_model.title_states`), through the adapter with its square
maps set to the identity (`identity_maps`): can the LLM learn to read soft tokens on this budget
when the information is certainly in them, in its own embedding space?
The text baselines `text20` / `text50` (mode `full` only) have no soft tokens: the pipeline
writes the last 20 / 50 clicked titles above each question and the LLM is fine-tuned on that,
on the same budget (raise `input.max_text_len`: ~290 / ~640 tokens on the default data).

Every step guards itself: a non-finite loss, gradient norm or updated-parameter norm leaves
the state as it was (the step is skipped and counted, the data moves on), and
`align.max_bad_steps` skipped steps in a row stop the run; checkpoints only ever hold states
that came out of good steps. Checkpoints hold the trainable parameters, optimizer state and the
data iterator (Orbax), so a resumed run ends with parameters bit-identical to an uninterrupted
one (its result's `steps_per_s` covers the steps it ran; none ran: null).

The frozen encoder's states are not cached: it runs forward (deterministic, no gradient) in
every step. At the default shapes that forward is a small part of the step next to the LLM's
forward and backward (`benchmarks/align_step.py` reports both), and a cache of [rows, L, D]
float32 states would not stay in memory bounds at the paper's scale (1.5M rows x 512 x 512).

Shape letters as in `uqa_model`. The result holds the eval answer NLL overall and per sub-task;
`workdir/align/export` (`align_export`) holds the aligned model for Stage 3.
"""

import dataclasses
import functools
import hashlib
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from uqa_jax import adapters
from uqa_jax import align_export
from uqa_jax import checkpoint as checkpoint_lib
from uqa_jax import choices
from uqa_jax import config_blocks
from uqa_jax import distributed
from uqa_jax import parallel
from uqa_jax import plan
from uqa_jax import questions
from uqa_jax import stages
from uqa_jax import uqa_model
from uqa_jax.adapters import config as adapter_lib
from uqa_jax.adapters import title_fit
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config_blocks import RUN_ONLY
from uqa_jax.data import arrow_io
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.encoders import export as encoder_export
from uqa_jax.llm import assets
from uqa_jax.llm import model as llm_model
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.llm import sharded_load
from uqa_jax.llm import weights
from uqa_jax.stages import data as data_stage
from uqa_jax.stages import train_loop

BLOCKS = ("align", "adapter")
UPSTREAM = ("pretrain",)
PROCESSES = "all"  # several JAX processes run it together: the batch is global (uqa_jax.distributed)
SCHEDULES = ("constant", "warmup_cosine")
LR_OF = {"adapter": "learning_rate", "encoder": "learning_rate", "llm": "llm_learning_rate"}


@dataclasses.dataclass(frozen=True)
class AlignConfig:
  """The `align` block; defaults are the official recipe (adapter-only, AdamW 1e-4, 3 epochs)."""
  mode: str = "adapter"  # choices.ALIGN_MODES: adapter | full
  user: str = "encoder"  # choices.ALIGN_USERS: encoder | zeros | random_encoder | oracle_titles | text20 | text50
  place: str = "prefix"  # choices.SPLICE_PLACES: prefix | placeholder (before the question)
  # choices.ADAPTER_INITS: random | titles (`adapters/title_fit.py`: the token map starts as the
  # ridge fit of each click's mean title embedding on its encoder state)
  adapter_init: str = dataclasses.field(default="random", metadata=config_blocks.added_later("random"))
  title_fit_rows: int = dataclasses.field(default=512, metadata=config_blocks.added_later(512))  # align-train rows it fits on
  system_prompt: str = ""  # "": no system turn at all
  batch_size: int = 32
  epochs: int = 3  # used when steps is 0
  steps: int = 0  # 0: epochs x rows // batch_size
  learning_rate: float = 1e-4  # adapter (and encoder, when it trains)
  llm_learning_rate: float = 1e-6  # mode full only (official: 1e-6 for every non-adapter parameter)
  llm_frozen_steps: int = 0  # mode full: the LLM's rate is 0 for this many first steps (the adapter, and a training encoder, start at once)
  train_encoder: bool = False
  schedule: str = "constant"  # constant (official) | warmup_cosine (warm-up, cosine to a tenth)
  warmup_steps: int = 100  # schedule warmup_cosine only
  betas: tuple[float, float] = (0.9, 0.98)
  weight_decay: float = 0.0
  grad_clip: float = 1.5
  max_bad_steps: int = dataclasses.field(default=10, metadata=RUN_ONLY)
  log_every: int = dataclasses.field(default=10, metadata=RUN_ONLY)
  eval_every: int = dataclasses.field(default=0, metadata=RUN_ONLY)  # 0: at the end only
  checkpoint_every: int = dataclasses.field(default=100, metadata=RUN_ONLY)
  max_to_keep: int = dataclasses.field(default=2, metadata=RUN_ONLY)
  # Memory one device may use, e.g. "80GiB" (empty: what the device reports); the step is planned
  # against it before the LLM's weights are read (uqa_jax.plan), as pretrain.device_memory.
  device_memory: str = dataclasses.field(default="", metadata=RUN_ONLY)

  def __post_init__(self):
    plan.parse_memory(self.device_memory)  # a malformed size fails when the config is read
    for key, valid in (("mode", choices.ALIGN_MODES), ("user", choices.ALIGN_USERS),
                       ("place", choices.SPLICE_PLACES), ("schedule", SCHEDULES), ("adapter_init", choices.ADAPTER_INITS)):
      if getattr(self, key) not in valid:
        raise ValueError(f"{key}={getattr(self, key)!r} is not a valid choice; expected one of {', '.join(valid)}")
    if self.train_encoder and self.mode != "full":
      raise ValueError("train_encoder=True needs mode='full' (mode 'adapter' trains the adapter only)")
    if self.train_encoder and self.user in ("zeros", choices.ORACLE, *choices.TEXT_CLICKS):
      raise ValueError(f"train_encoder=True with user={self.user!r}: the {self.user} control never reads the encoder")
    if self.user in choices.TEXT_CLICKS and self.mode != "full":
      raise ValueError(f"user={self.user!r} puts the history into the prompt as text and has no soft tokens: "
                       "only the LLM can learn, so it needs mode='full'")
    if self.llm_frozen_steps and self.mode != "full":
      raise ValueError(f"llm_frozen_steps={self.llm_frozen_steps} needs mode='full' (mode 'adapter' never trains the LLM)")
    if self.llm_frozen_steps < 0:
      raise ValueError(f"llm_frozen_steps={self.llm_frozen_steps}; expected 0 or more")
    if self.adapter_init == "titles" and self.user in (choices.ORACLE, *choices.TEXT_CLICKS):
      raise ValueError(f"adapter_init='titles' with user={self.user!r}: it fits the map from encoder states; the "
                       f"{self.user} run has none (the oracle's map starts as the identity)")
    if self.title_fit_rows < 1:
      raise ValueError(f"title_fit_rows={self.title_fit_rows}; expected at least 1")
    if self.max_bad_steps < 1:
      raise ValueError(f"max_bad_steps={self.max_bad_steps}; expected at least 1")

  def trainable(self) -> tuple[str, ...]:
    """The parameter groups the update touches."""
    return ("adapter",) + (("llm",) if self.mode == "full" else ()) + (("encoder",) if self.train_encoder else ())


@flax.struct.dataclass
class AlignState:
  step: jax.Array
  params: Any  # the trainable groups only: {"adapter": ..., ["llm": ..., "encoder": ...]}
  opt_state: Any
  bad_in_row: jax.Array  # skipped steps since the last good one
  skipped: jax.Array  # skipped steps in all


def align_config(config) -> AlignConfig:
  return config_blocks.build(AlignConfig, config.align, "align")


def adapter_config(config, d_llm: int = 0, embed_rms: float = 1.0) -> AdapterConfig:
  return config_blocks.build_checked(AdapterConfig, config.adapter, "adapter",
                                     lambda c: adapter_lib.check_reads(c, adapters.reads(c.name)),
                                     d_llm=d_llm, embed_rms=embed_rms)


def check_run(config) -> None:
  """What would stop a run only after Stage 1 and the LLM's loading, checked when the config is
  read (main's pre-check calls `fingerprint`): bfloat16 weights for a full fine-tune, and chats
  cut per batch (`input.pad_multiple`) with several processes."""
  a, source = align_config(config), data_stage.llm_source(config)
  if a.mode == "full" and source.param_dtype != "float32":
    raise config_blocks.ConfigError(
        f"config llm.param_dtype={source.param_dtype!r} with align.mode='full': the LLM trains at "
        f"align.llm_learning_rate={a.llm_learning_rate:g}, and bfloat16 weights (8 bits of mantissa) would round "
        "most of its updates away; a full fine-tune keeps float32 weights (llm.dtype=bfloat16 still computes in "
        "bfloat16)")
  if jax.process_count() > 1 and data_stage.input_config(config).pad_multiple:
    raise config_blocks.ConfigError(
        f"config input.pad_multiple={data_stage.input_config(config).pad_multiple} with {jax.process_count()} "
        "processes: it cuts each batch to its longest chat, which differs between the processes' rows; set it to 0")


def fingerprint(config) -> dict:
  check_run(config)
  a = align_config(config)
  unused = ("epochs",) if a.steps else ()
  unused += () if a.mode == "full" else ("llm_learning_rate", "llm_frozen_steps")
  unused += () if a.schedule == "warmup_cosine" else ("warmup_steps",)
  unused += () if a.adapter_init == "titles" else ("title_fit_rows",)
  ad = adapter_config(config)
  i = data_stage.input_config(config)
  # length_window orders the training rows (0, the order before it existed, stays out);
  # pad_multiple only cuts padding, which changes no number (tests/test_uqa_model.py).
  return {"align": {k: v for k, v in config_blocks.fingerprint(a).items() if k not in unused},
          "adapter": config_blocks.fingerprint(ad, keep=("name",) + adapters.reads(ad.name)),
          "llm": config_blocks.fingerprint(data_stage.llm_source(config)),
          "input": {"max_text_len": i.max_text_len, **({"length_window": i.length_window} if i.length_window else {})}}


def make_optimizer(a: AlignConfig, total_steps: int):
  """AdamW with one learning rate per trainable group, after clipping the global gradient norm.

  Built as clip -> Adam moments -> decoupled weight decay -> per-group rate (what `optax.adamw`
  chains, with the last link per group). The optimizer state then holds only arrays shaped
  like the parameters (no `optax.multi_transform` masks), which Orbax saves and restores as is.
  """
  def schedule(lr, delay=0):
    if a.schedule == "constant":
      after = optax.constant_schedule(lr)
    else:
      after = optax.warmup_cosine_decay_schedule(0.0, lr, a.warmup_steps, total_steps - delay, end_value=lr * 0.1)
    return optax.join_schedules([optax.constant_schedule(0.0), after], [delay]) if delay else after
  delays = {"llm": a.llm_frozen_steps}  # the LLM's schedule starts after its frozen steps
  return optax.chain(optax.clip_by_global_norm(a.grad_clip),
                     optax.scale_by_adam(b1=a.betas[0], b2=a.betas[1]),
                     optax.add_decayed_weights(a.weight_decay),
                     scale_by_group_schedule({g: schedule(getattr(a, LR_OF[g]), delays.get(g, 0)) for g in a.trainable()}))


def scale_by_group_schedule(schedules: dict) -> optax.GradientTransformation:
  """Updates {group: tree} scaled by -schedules[group](step), as `optax.scale_by_learning_rate`."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    out = {g: jax.tree.map(lambda u, g=g: -schedules[g](state.count) * u, sub) for g, sub in updates.items()}
    return out, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def soft_token_norm(model, params, batch):
  """Mean L2 norm of the batch's soft tokens (to compare with the LLM's token embeddings); 0 without any."""
  if not model.num_soft:
    return jnp.float32(0.0)
  return jnp.mean(jnp.linalg.norm(model.soft_tokens(params, batch), axis=-1))


def train_step(state: AlignState, frozen, batch, *, model, tx, loss_fn=uqa_model.answer_loss):
  """One guarded AdamW step -> (state, metrics), on the device.

  `frozen` holds the groups that do not train; they are an input, never an output, so they
  cannot change. A non-finite loss, gradient norm or updated-parameter norm keeps the old
  parameters and optimizer state and counts the step as skipped (as `optax.apply_if_finite`
  does: the schedule's step count then stays behind `state.step` by the skipped steps).
  """
  params_in = state.params
  loss, grads = jax.value_and_grad(lambda p: loss_fn({**frozen, **p}, batch, model=model))(params_in)
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
  return state, {"loss": loss, "grad_norm": grad_norm, "param_norm": param_norm, "skipped": ~ok,
                 "bad_in_row": bad_in_row, "soft_norm": soft_norm}


@dataclasses.dataclass(frozen=True)
class Program:
  """The align step and its shardings, made from shapes alone: `build` runs it, the memory
  planner (`plan.align_target`) compiles it on abstract arguments before any weight is read."""
  model: uqa_model.UQAModel
  total_steps: int
  inits: dict  # group -> (PRNGKey -> boxed params): each group's shapes, dtypes and logical names
  shardings: dict  # group -> parameter shardings
  trainable: tuple
  state_shardings: Any
  batch_sharding: Any
  init_state: Any  # {trainable group: params} -> AlignState, jitted onto state_shardings
  step: Any  # parallel.Sharded: (state, frozen, batch) -> (state, metrics), state donated
  eval_nll: Any  # (params, batch) -> (nll [B], tokens [B], task [B], valid [B]) of the global batch, replicated

  def abstract_state(self):
    """The AlignState's shapes, dtypes and shardings (nothing allocated)."""
    boxed = jax.eval_shape(lambda r: {g: self.inits[g](r) for g in self.trainable}, jax.random.PRNGKey(0))
    return _with_shardings(jax.eval_shape(self.init_state, nn.unbox(boxed)), self.state_shardings)

  def abstract_frozen(self):
    return {g: _with_shardings(nn.unbox(jax.eval_shape(self.inits[g], jax.random.PRNGKey(0))), self.shardings[g])
            for g in self.inits if g not in self.trainable}


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything an align run (or a test) needs, built once from the config."""
  cfg: AlignConfig
  model: uqa_model.UQAModel
  mesh: Any
  pipe: pipeline.PipelineConfig
  tokenizer: Any
  total_steps: int
  frozen: Any  # the groups that do not train, on the device
  start_params: Any  # every group as loaded: host arrays, the frozen LLM on the devices (a trained one: its shapes)
  embed_norm: float  # mean L2 norm of the LLM's token embeddings
  state_shardings: Any
  batch_sharding: Any
  init: Any  # PRNGKey -> AlignState (the key is unused: training starts from the loaded params)
  step: Any  # (state, batch) -> (state, metrics), jitted, state donated
  eval_nll: Any  # (params, batch) -> (nll [B], tokens [B], task [B], valid [B]) of the global batch
  encoder_export: str
  program: Program  # the jitted functions and shardings `init`, `step` and `eval_nll` run
  title_fit: dict | None = None  # adapter_init="titles": what the fit saw and how well it fits


def _with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def program(config, model: uqa_model.UQAModel, has_time: bool, mesh, rows: int,
            loss_fn=uqa_model.answer_loss) -> Program:
  """The align step for `model` on `mesh`; `rows`: align-train rows (the run's length in steps)."""
  a = align_config(config)
  axis_rules = parallel.config_rules(config)
  example_states = (jnp.zeros((1, 2, model.adapter_width)), jnp.ones((1, 2), jnp.int32))
  inits = {
      "encoder": lambda r: model.encoder.init({"params": r, "dropout": r},
                                              encoder_export._example_batch(has_time))["params"],
      "adapter": lambda r: model.adapter.init(r, *example_states)["params"],
      "llm": lambda r: llm_model.init_params(model.llm.cfg, r)}
  # Parameter shardings from the modules' logical axis names (the adapter's: replicated by rule).
  shardings = {g: parallel.param_shardings(mesh, jax.eval_shape(f, jax.random.PRNGKey(0)), axis_rules)
               for g, f in inits.items()}
  trainable = a.trainable()
  total_steps = a.steps or a.epochs * max(1, rows // a.batch_size)
  if a.llm_frozen_steps and (a.llm_frozen_steps + (a.warmup_steps if a.schedule == "warmup_cosine" else 0)) >= total_steps:
    raise config_blocks.ConfigError(f"config align.llm_frozen_steps={a.llm_frozen_steps}: with the LLM's warm-up "
                                    f"it leaves no step of the run's {total_steps} for the LLM to train")
  if a.schedule == "warmup_cosine" and a.warmup_steps >= total_steps:
    raise config_blocks.ConfigError(f"config align.warmup_steps={a.warmup_steps}: not below the run's "
                                    f"{total_steps} steps; lower it or use align.schedule='constant'")
  tx = make_optimizer(a, total_steps)

  def init_state(params):
    return AlignState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                      bad_in_row=jnp.int32(0), skipped=jnp.int32(0))

  # Optimizer moments take their parameters' logical names, so they shard like them.
  abstract = jax.eval_shape(lambda r: init_state({g: inits[g](r) for g in trainable}), jax.random.PRNGKey(0))
  state_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, axis_rules)
  batch_sh = parallel.logical_sharding(mesh, ("batch",), axis_rules)
  frozen_sh = {g: shardings[g] for g in inits if g not in trainable}
  step = parallel.Sharded(functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn), mesh,
                          axis_rules, in_shardings=(state_sh, frozen_sh, batch_sh),
                          out_shardings=(state_sh, None), donate_argnums=0)
  eval_nll = parallel.Sharded(functools.partial(_eval_rows, model=model), mesh, axis_rules,
                              in_shardings=(shardings, batch_sh),  # replicated out: every process reads all
                              out_shardings=parallel.logical_sharding(mesh, (), axis_rules))
  return Program(model=model, total_steps=total_steps, inits=inits, shardings=shardings, trainable=trainable,
                 state_shardings=state_sh, batch_sharding=batch_sh,
                 # donated: the first state holds the only copy of what trains (a full fine-tune's LLM)
                 init_state=parallel.Sharded(init_state, mesh, axis_rules, out_shardings=state_sh, donate_argnums=0),
                 step=step, eval_nll=eval_nll)


def _eval_rows(params, batch, *, model):
  """(nll [B], tokens [B]) and the rows' task and valid flags: with several processes each holds
  only its block of the batch's rows, so the host reads them back from the global batch."""
  return (*uqa_model.answer_nll(params, batch, model=model), batch["task"], batch["valid"])


def make_model(config, encoder, llm_cfg, embed_rms: float = 1.0) -> uqa_model.UQAModel:
  """Encoder -> adapter -> LLM (`llm_cfg` at the config's compute and storage dtypes)."""
  check_run(config)
  a, source = align_config(config), data_stage.llm_source(config)
  llm = llm_model.Decoder(llm_cfg.replace(dtype=source.dtype, param_dtype=source.param_dtype, remat=source.remat))
  adapter_cfg = adapter_config(config, d_llm=llm_cfg.d_model, embed_rms=embed_rms)
  adapter = adapters.get(adapter_cfg.name)(adapter_cfg)
  return uqa_model.UQAModel(encoder, adapter, llm, place=a.place, user=a.user)


def make_pipeline(config) -> pipeline.PipelineConfig:
  """The align-train batches: shuffled, endless (the step count ends the run)."""
  a = align_config(config)
  return data_stage.input_config(config).pipeline(
      batch_size=a.batch_size, max_len=data_stage.data_config(config).max_len, seed=config.seed, num_epochs=None,
      system_prompt=a.system_prompt, history_clicks=choices.TEXT_CLICKS.get(a.user, 0))


def train_rows(workdir: str) -> int:
  info = arrow_io.read_dataset_info(data_stage.data_dir(workdir))
  return info["counts"][schema.file_name("align", "train")]


def build(config, workdir: str, devices=None, loss_fn=uqa_model.answer_loss, log=None) -> Parts:
  """Everything a run needs. With `log` (a run), the step's memory is planned first from the
  LLM's config.json, its token embedding and shapes alone (`plan.check`): a step that cannot fit
  stops before the LLM's weights are read. The LLM then loads straight into its shardings
  (stored as `llm.param_dtype`), tensor by tensor."""
  a = align_config(config)
  source = data_stage.llm_source(config)
  export_dir = os.path.abspath(os.path.join(workdir, "pretrain", "export"))
  encoder, encoder_params, spec = encoder_export.load(export_dir)
  d = data_stage.data_config(config)
  if encoder.cfg.max_len != d.max_len:
    raise encoder_export.ExportError(f"{export_dir}: encoder max_len {encoder.cfg.max_len}, data.max_len {d.max_len}")
  mesh = parallel.make_mesh(config.mesh.to_dict(), devices)
  pipe = make_pipeline(config)
  tokenizer = tokenizer_lib.load_tokenizer(source.model)
  if a.user in choices.TEXT_CLICKS:
    questions.check_title_tokenizer(data_stage.data_dir(workdir), source.model)
  embedding_VxM = weights.read_embedding(source.model)  # the adapter's output scale starts at its RMS
  model = make_model(config, encoder, weights.read_config(source.model), align_export.embedding_rms(embedding_VxM))
  prog = program(config, model, spec["has_time"], mesh, train_rows(workdir), loss_fn)
  if log is not None:  # a run (not a test's build): the step must fit before the LLM is read
    plan.check(plan.align_target(prog, pipe, data_stage.data_dir(workdir), tokenizer, mesh), log,
               memory=plan.parse_memory(a.device_memory))
  load_llm = lambda: sharded_load.load_onto(source.model, mesh, dtype=source.param_dtype,
                                            shardings=prog.shardings["llm"])[1]
  llm_params = load_llm()

  if a.user == "random_encoder":  # same architecture, untrained, seeded
    encoder_params = jax.device_get(nn.unbox(prog.inits["encoder"](jax.random.PRNGKey(config.seed + 2))))
  adapter_params = jax.device_get(nn.unbox(prog.inits["adapter"](jax.random.PRNGKey(config.seed + 1))))
  if a.user == choices.ORACLE:  # the oracle's states are in the LLM's space already: keep them there
    adapter_params = identity_maps(adapter_params)
  fit = None
  if a.adapter_init == "titles":
    train_path = os.path.join(data_stage.data_dir(workdir), schema.file_name("align", "train"))
    adapter_params, fit = fit_to_titles(a, model, encoder_params, adapter_params, embedding_VxM,
                                        train_path, pipe, tokenizer)
  if jax.process_count() > 1:  # every process computed them; one value for all, bit for bit
    adapter_params = multihost_utils.broadcast_one_to_all(adapter_params)
  start_params = {"encoder": encoder_params, "llm": llm_params, "adapter": adapter_params}
  frozen = {g: parallel.shard_params(start_params[g], prog.shardings[g]) for g in prog.inits if g not in prog.trainable}
  loaded = {}
  if "llm" in prog.trainable:  # the first state takes these arrays over; only their shapes stay here
    loaded["llm"] = llm_params
    start_params["llm"] = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), llm_params)

  def init(_rng):
    """The first state. Each call places the trainable groups anew and donates them to it; a full
    fine-tune's LLM is the one loaded above, read again when an earlier call took it over."""
    params = {g: parallel.shard_params(start_params[g], prog.shardings[g]) for g in prog.trainable if g != "llm"}
    if "llm" in prog.trainable:
      params["llm"] = loaded.pop("llm", None) or load_llm()
    return prog.init_state(params)

  return Parts(cfg=a, model=model, mesh=mesh, pipe=pipe, tokenizer=tokenizer,
               total_steps=prog.total_steps, frozen=frozen, start_params=start_params,
               embed_norm=float(np.mean(np.linalg.norm(embedding_VxM, axis=-1))),
               state_shardings=prog.state_shardings, batch_sharding=prog.batch_sharding,
               init=init,
               step=lambda state, batch: prog.step(state, frozen, batch), eval_nll=prog.eval_nll,
               encoder_export=export_dir, program=prog, title_fit=fit)


TITLE_FIT_HELDOUT_USERS = 64  # users after the fitted rows whose clicks measure the fit out of sample


def fit_to_titles(a: AlignConfig, model, encoder_params, adapter_params, embedding_VxM, path: str,
                  pipe: pipeline.PipelineConfig, tokenizer) -> tuple[dict, dict]:
  """(adapter params with `proj` fitted, what the fit saw): `adapters/title_fit.py` on the
  states of the first `align.title_fit_rows` rows of the align-train file `path`, in file order
  (all zero for the `zeros` control, whose adapter never sees a state), every valid click.

  A user asked several questions has several rows with one history: the fit counts its clicks
  once per row. Reported: R² on the fitted clicks, the distinct users they come from, and the R²
  of the same map on one row each of the next `TITLE_FIT_HELDOUT_USERS` users not fitted on."""
  title_fit.check(adapter_params)  # before any work
  pipe = dataclasses.replace(pipe, shuffle=False, num_epochs=1, drop_remainder=False, length_window=0, pad_multiple=0)
  encode = jax.jit(lambda p, b: model.encoder.apply({"params": p}, b))
  titles = jax.jit(uqa_model.title_states)
  fit, held, rows, fit_users, held_users = ([], []), ([], []), 0, set(), set()
  for batch in pipeline.make_dataset(path, pipe, tokenizer=tokenizer, process_index=0, process_count=1):
    states_BxLxD, _, mask_BxL = (np.asarray(x) for x in encode(encoder_params, batch))
    if a.user == "zeros":
      states_BxLxD = np.zeros_like(states_BxLxD)
    title_BxLxM = np.asarray(titles(embedding_VxM, batch)[0])
    keep_BxL = mask_BxL.astype(bool) & batch["valid"][:, None]
    fitting = rows < a.title_fit_rows
    for b in np.flatnonzero(batch["valid"]):
      user = hashlib.sha1(np.asarray(batch[uqa_model.TITLE_COLUMN][b]).tobytes()).hexdigest()
      if fitting:
        fit_users.add(user)
      elif user in fit_users or user in held_users or len(held_users) >= TITLE_FIT_HELDOUT_USERS:
        continue
      else:
        held_users.add(user)
      into = fit if fitting else held
      into[0].append(states_BxLxD[b][keep_BxL[b]])
      into[1].append(title_BxLxM[b][keep_BxL[b]])
    rows += int(batch["valid"].sum()) if fitting else 0
    if not fitting and len(held_users) >= TITLE_FIT_HELDOUT_USERS:
      break
  kernel, bias, r2 = title_fit.ridge(np.concatenate(fit[0]), np.concatenate(fit[1]))
  out = {"r2": r2, "clicks": int(sum(len(x) for x in fit[0])), "rows": rows, "users": len(fit_users),
         "heldout_users": len(held_users)}
  if held_users:
    out["r2_heldout"] = title_fit.r2(np.concatenate(held[0]), np.concatenate(held[1]), kernel, bias)
  return title_fit.apply(adapter_params, kernel, bias), out


def identity_maps(adapter_params):
  """The adapter with every square Dense map (d_llm -> d_llm) set to the identity, its bias cut to
  1/100: for the oracle reader, whose inputs are LLM embeddings, soft tokens start as those
  embeddings (then the output norm), not a random projection of them. (A token embedding's
  entries are ~0.1, the size of `common.token_dense`'s random bias; a hundredth keeps a zero
  input from giving an exactly zero token.)"""
  def visit(tree):
    if not isinstance(tree, dict):
      return tree
    kernel = tree.get("kernel")
    if kernel is not None and np.ndim(kernel) == 2 and kernel.shape[0] == kernel.shape[1]:
      return {**tree, "kernel": np.eye(kernel.shape[0], dtype=np.asarray(kernel).dtype),
              **({"bias": np.asarray(tree["bias"]) / 100} if "bias" in tree else {})}
    return {k: visit(v) for k, v in tree.items()}
  return visit(adapter_params)


def params_of(parts: Parts, state: AlignState) -> dict:
  """Every group: the trained ones from `state`, the frozen ones as loaded."""
  return {**parts.frozen, **state.params}


def evaluate(parts: Parts, params, data_dir: str) -> dict:
  """Answer NLL per token on the align eval file, overall and per sub-task."""
  path = os.path.join(data_dir, schema.file_name("align", "eval"))
  cfg = dataclasses.replace(parts.pipe, shuffle=False, num_epochs=1, drop_remainder=False)
  nll = {t: 0.0 for t in schema.TASKS}
  tokens = dict.fromkeys(schema.TASKS, 0.0)
  for batch in distributed.GlobalBatches(iter(pipeline.make_dataset(path, cfg, tokenizer=parts.tokenizer)),
                                         parts.batch_sharding):
    nll_B, count_B, task_B, valid_B = (np.asarray(x) for x in jax.device_get(parts.eval_nll(params, batch)))
    nll_B, count_B = nll_B.astype(np.float64), count_B.astype(np.float64)
    for b in np.flatnonzero(valid_B):
      task = schema.TASKS[task_B[b]]
      nll[task] += nll_B[b]
      tokens[task] += count_B[b]
  out = {"answer_nll": sum(nll.values()) / max(sum(tokens.values()), 1.0)}
  out.update({f"answer_nll/{t}": nll[t] / tokens[t] for t in schema.TASKS if tokens[t]})
  if not np.isfinite(out["answer_nll"]):
    raise FloatingPointError(f"align: eval answer NLL is {out['answer_nll']} ({path})")
  return out


def run(config, workdir: str, log=print) -> dict:
  parts = build(config, workdir, log=log)
  a, data_dir = parts.cfg, data_stage.data_dir(workdir)
  out_dir = os.path.join(workdir, "align")
  path = os.path.join(data_dir, schema.file_name("align", "train"))
  # global arrays with the step's batch sharding: batches of the planned shape (the full text
  # length; with input.pad_multiple only the longest) run the executable the plan compiled
  data = distributed.GlobalBatches(iter(pipeline.make_dataset(path, parts.pipe, tokenizer=parts.tokenizer)),
                                   parts.batch_sharding)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(out_dir, "checkpoints"), a.max_to_keep)
  model = parts.model
  curve = []
  try:
    state = train_loop.start(ckpt, parts.init, parts.state_shardings, data, config.seed, log, "align")
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    source = (f"the last {choices.TEXT_CLICKS[a.user]} clicked titles as text (no encoder, no soft tokens)"
              if a.user in choices.TEXT_CLICKS else
              f"oracle: each click's mean title embedding from the LLM -> {model.adapter.cfg.name} adapter "
              f"({model.num_soft} soft tokens, {a.place})" if a.user == choices.ORACLE else
              f"{model.encoder.cfg.name} encoder ({'trains' if a.train_encoder else 'frozen'}) -> "
              f"{model.adapter.cfg.name} adapter ({model.num_soft} soft tokens, {a.place})")
    log(f"align: {source} -> LLM {data_stage.llm_source(config).model} ({model.llm.cfg.dtype}); mode {a.mode}, "
        f"user {a.user}; training {count(state.params):,} of {count(parts.start_params):,} parameters; "
        f"{parts.total_steps} steps of batch {a.batch_size}, mesh {dict(parts.mesh.shape)}")
    if parts.title_fit:
      f = parts.title_fit
      log(f"align: adapter map '{title_fit.PARAM}' starts as the ridge fit of each click's mean title embedding "
          f"on its {'(zero) ' if a.user == 'zeros' else ''}state: R² {f['r2']:.3f} on {f['clicks']:,} clicks of "
          f"{f['rows']} rows ({f['users']} users); on one row each of {f['heldout_users']} users not fitted on: "
          + (f"R² {f['r2_heldout']:.3f}" if "r2_heldout" in f else "none left in the file"))
    if a.user in ("encoder", "random_encoder") and not a.train_encoder:
      log("align: frozen encoder states are recomputed each step (not cached)")
    start_eval = _eval_before(parts, state, data_dir, out_dir, log)
    state, steps_per_s = train_loop.run(
        parts.step, state, data, total_steps=parts.total_steps, ckpt=ckpt, cfg=a, log=log, name="align",
        batch_size=a.batch_size, max_bad_steps=a.max_bad_steps, curve=curve,
        describe=lambda m: f"soft-token norm {float(m['soft_norm']):.3f} (token embeddings {parts.embed_norm:.3f})",
        evaluate=lambda s: f"answer NLL {evaluate(parts, params_of(parts, s), data_dir)['answer_nll']:.4f}")
  finally:
    ckpt.close()
  final = evaluate(parts, params_of(parts, state), data_dir)
  skipped = int(jax.device_get(state.skipped))
  log(f"align: final eval answer NLL {final['answer_nll']:.4f} (" +
      ", ".join(f"{t} {final[f'answer_nll/{t}']:.3f}" for t in schema.TASKS if f"answer_nll/{t}" in final) +
      f"); {skipped} steps skipped")
  result = {"eval": final, "eval_before": start_eval, "steps_per_s": steps_per_s,
            "examples_per_s": None if steps_per_s is None else steps_per_s * a.batch_size,
            "skipped_steps": skipped, **({"title_fit": parts.title_fit} if parts.title_fit else {}),
            "loss_curve": curve}  # [step, mean training loss since the last progress line], this run's steps
  align_export.save(os.path.join(out_dir, "export"), {
      "adapter": dataclasses.asdict(model.adapter.cfg),
      "align": {"mode": a.mode, "user": a.user, "place": a.place, "system_prompt": a.system_prompt},
      "llm": dataclasses.asdict(_absolute(data_stage.llm_source(config))),
      "encoder_export": parts.encoder_export, "encoder_checksum": align_export.checksum(parts.start_params["encoder"]),
      "metrics": result}, exported_params(parts, state))
  return result


def _absolute(source):
  """The LLM source with its path absolute (the export is read from other directories)."""
  if source.model == assets.DEFAULT_MODEL:
    return source
  return dataclasses.replace(source, model=os.path.abspath(source.model))


def exported_params(parts: Parts, state: AlignState) -> dict:
  """What the export holds: the trained groups, and the encoder whenever it is not Stage 1's."""
  saved = dict(state.params)
  if parts.cfg.user == "random_encoder" and "encoder" not in saved:
    saved["encoder"] = parts.frozen["encoder"]
  return saved


def _eval_before(parts: Parts, state: AlignState, data_dir: str, out_dir: str, log) -> dict:
  """The eval NLL before training: computed at step 0 and kept, so a resumed run reports the same."""
  path = os.path.join(out_dir, "eval_before.json")
  if int(state.step) == 0:
    result = evaluate(parts, params_of(parts, state), data_dir)
    if distributed.is_main():
      stages.write_json(path, result)
  else:
    result = stages.read_json(path)
  log(f"align: eval answer NLL {result['answer_nll']:.4f} before training")
  return result
