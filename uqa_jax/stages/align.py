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
mean LLM embedding of its title (`soft_prompt.model.title_states`), through the adapter with its square
maps set to the identity (`adapters/identity.py`): can the LLM learn to read soft tokens on this budget
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

The model, its step and optimizer are `uqa_jax/soft_prompt/` (`program.py`); this file is the
loop. The result holds the eval answer NLL overall and per sub-task; `workdir/align/export`
(`soft_prompt/export.py`) holds the aligned model for Stage 3.
"""

import dataclasses
import os
import time

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils

from uqa_jax import adapters
from uqa_jax.adapters import identity
from uqa_jax.adapters import title_fit
from uqa_jax.adapters.config import AdapterConfig
from uqa_jax.config import blocks
from uqa_jax.config import choices
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import arrow_io
from uqa_jax.data import pipeline
from uqa_jax.data import schema
from uqa_jax.data.config import DataConfig
from uqa_jax.encoders import export as encoder_export
from uqa_jax.evaluation import questions
from uqa_jax.llm import assets
from uqa_jax.llm import sharded_load
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.llm import weights
from uqa_jax.llm.assets import LLMSource
from uqa_jax.runtime import atomic
from uqa_jax.runtime import checkpoint as checkpoint_lib
from uqa_jax.runtime import distributed
from uqa_jax.runtime import keys
from uqa_jax.runtime import parallel
from uqa_jax.runtime import planner
from uqa_jax.runtime import scalars
from uqa_jax.runtime import workdir as workdir_lib
from uqa_jax.soft_prompt import export as align_export
from uqa_jax.soft_prompt import model as uqa_model
from uqa_jax.soft_prompt import optimizer
from uqa_jax.soft_prompt import program as program_lib
from uqa_jax.soft_prompt import title_init
from uqa_jax.soft_prompt.program import AlignState, Program
from uqa_jax.stages import align_reconstruct
from uqa_jax.stages import train_loop

BLOCKS = ("align", "adapter")
UPSTREAM = ("pretrain",)
VERSION = 1  # of what it computes; the rule for bumping it: uqa_jax/stages/__init__.py
PROCESSES = "all"  # several JAX processes run it together: the batch is global (uqa_jax.runtime.distributed)


def check_run(config) -> None:
  """What this run's processes allow (start-up, when the stage is listed)."""
  program_lib.check_processes(config)


def fingerprint(config) -> dict:
  program_lib.check_config(config)
  a = blocks.read(config, AlignConfig)
  unused = ("epochs",) if a.steps else ()
  unused += () if a.mode == "full" else ("llm_learning_rate", "llm_frozen_steps", "llm_steps")
  unused += () if a.schedule == "warmup_cosine" else ("warmup_steps",)
  unused += () if a.adapter_init == "titles" else ("title_fit_rows",)
  unused += () if a.reconstructs() else ("reconstruct_clicks", "reconstruct_fields")
  unused += () if a.reconstruct_steps else ("reconstruct_learning_rate",)
  ad = blocks.read(config, AdapterConfig)
  i = blocks.read(config, pipeline.InputConfig)
  # length_window orders the training rows (0, the order before it existed, stays out);
  # widths only cut padding, which changes no number (tests/unit/soft_prompt/test_uqa_model.py).
  # a held LLM's phases: no gradient, out of the clip, its own Adam clock (workdirs made before
  # this key computed them otherwise and are not reused)
  held = {"held_llm": "own_adam"} if optimizer.holds_llm(a) else {}
  # llm_from: one spelling per place (`./workdir/x` and `workdir/x` are the same source)
  source = {"llm_from": os.path.normpath(a.llm_from)} if a.llm_from else {}
  return {"align": {**{k: v for k, v in blocks.fingerprint(a).items() if k not in unused}, **held, **source},
          "adapter": blocks.fingerprint(ad, keep=("name",) + adapters.reads(ad.name)),
          "llm": blocks.fingerprint(blocks.read(config, LLMSource)),
          "input": {"max_text_len": i.max_text_len, **({"length_window": i.length_window} if i.length_window else {}),
                    # how many clicks a reconstruction answer holds depends on what fits
                    **({"max_answer_len": i.max_answer_len} if a.reconstructs() else {})}}


def make_pipeline(config) -> pipeline.InputConfig:
  """The align-train batches: shuffled, endless (the step count ends the run)."""
  a = blocks.read(config, AlignConfig)
  return blocks.read(config, pipeline.InputConfig).for_run(
      batch_size=a.batch_size, max_len=blocks.read(config, DataConfig).max_len, seed=config.seed, num_epochs=None,
      system_prompt=a.system_prompt, history_clicks=choices.TEXT_CLICKS.get(a.user, 0))


def train_rows(workdir: str) -> int:
  info = arrow_io.read_dataset_info(workdir_lib.data_dir(workdir))
  return info["counts"][schema.file_name("align", "train")]


def build(config, workdir: str, devices=None, loss_fn=uqa_model.answer_loss, log=None) -> Program:
  """The program with this run's weights. With `log` (a run), the step's memory is planned first
  from the LLM's config.json, its token embedding and shapes alone (`planner.check`): a step that
  cannot fit stops before the LLM's weights are read. The LLM then loads straight into its
  shardings (stored as `llm.param_dtype`), tensor by tensor; with `align.llm_from` the source
  export's LLM is restored whole on this process's first device, kept on the host and placed
  from there (memory the planner does not count)."""
  a = blocks.read(config, AlignConfig)
  source = blocks.read(config, LLMSource)
  if a.llm_from:  # before anything is read: the source's data must be this run's
    same_data(a.llm_from, workdir)
  export_dir = os.path.abspath(os.path.join(workdir, "pretrain", "export"))
  encoder, encoder_params, spec = encoder_export.load(export_dir)
  d = blocks.read(config, DataConfig)
  if encoder.cfg.max_len != d.max_len:
    raise encoder_export.ExportError(f"{export_dir}: encoder max_len {encoder.cfg.max_len}, data.max_len {d.max_len}")
  mesh = parallel.make_mesh(config.mesh.to_dict(), devices)
  pipe = make_pipeline(config)
  tokenizer = tokenizer_lib.load_tokenizer(source.model)
  if a.user in choices.TEXT_CLICKS or a.reconstructs():  # both write the titles out with the LLM's tokenizer
    questions.check_title_tokenizer(workdir_lib.data_dir(workdir), source.model)
  embedding_VxM = weights.read_embedding(source.model)  # the adapter's output scale starts at its RMS
  model = program_lib.make_model(config, encoder, weights.read_config(source.model),
                                 align_export.embedding_rms(embedding_VxM))
  prog = program_lib.program(config, model, spec["has_time"], mesh, train_rows(workdir), loss_fn)
  if log is not None:  # a run (not a test's build): the step must fit before the LLM is read
    planner.check(program_lib.plan_target(prog, pipe, workdir_lib.data_dir(workdir), tokenizer), log,
                  memory=planner.parse_memory(a.device_memory))
  load_llm = lambda: sharded_load.load_onto(source.model, mesh, dtype=source.param_dtype,
                                            shardings=prog.shardings["llm"])[1]
  llm_from = None
  if a.llm_from:  # another run's fine-tuned LLM, made from this one's llm.model and data
    expected = nn.unbox(jax.eval_shape(prog.inits["llm"], keys.abstract()))
    fine_tuned = align_export.fine_tuned_llm(a.llm_from, _absolute(source).model, expected)
    fine_tuned = jax.device_get(jax.tree.map(lambda x: x.astype(source.param_dtype), fine_tuned))  # as stored here
    llm_from = {"workdir": os.path.normpath(a.llm_from), "checksum": align_export.checksum(fine_tuned)}
    load_llm = lambda: parallel.shard_params(fine_tuned, prog.shardings["llm"])
  llm_params = load_llm()

  if a.user == "random_encoder":  # same architecture, untrained, seeded
    encoder_params = jax.device_get(nn.unbox(keys.initialise(prog.inits["encoder"], config.seed + 2)))
  adapter_params = jax.device_get(nn.unbox(keys.initialise(prog.inits["adapter"], config.seed + 1)))
  if a.user == choices.ORACLE:  # the oracle's states are in the LLM's space already: keep them there
    adapter_params = identity.identity_maps(adapter_params)
  fit = None
  if a.adapter_init == "titles":
    train_path = os.path.join(workdir_lib.data_dir(workdir), schema.file_name("align", "train"))
    adapter_params, fit = title_init.fit_to_titles(a, model, encoder_params, adapter_params, embedding_VxM,
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

  return prog.with_weights(pipe=pipe, tokenizer=tokenizer, frozen=frozen, start_params=start_params, init=init,
                           embed_norm=float(np.mean(np.linalg.norm(embedding_VxM, axis=-1))),
                           encoder_export=export_dir, title_fit=fit, llm_from=llm_from)


def evaluate(prog: Program, params, data_dir: str) -> dict:
  """Answer NLL per token on the align eval file, overall and per sub-task."""
  path = os.path.join(data_dir, schema.file_name("align", "eval"))
  nll = {t: 0.0 for t in schema.TASKS}
  tokens = dict.fromkeys(schema.TASKS, 0.0)
  rows = lambda batch: prog.eval_nll(params, batch)
  for out in train_loop.eval_batches(rows, path, prog.pipe, prog.batch_sharding, tokenizer=prog.tokenizer):
    nll_B, count_B, task_B, valid_B = (np.asarray(x) for x in out)
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
  started = time.time()
  prog = build(config, workdir, log=log)
  a, data_dir = prog.cfg, workdir_lib.data_dir(workdir)
  out_dir = os.path.join(workdir, "align")
  path = os.path.join(data_dir, schema.file_name("align", "train"))
  # global arrays with the step's batch sharding: batches of the planned shape (the full text
  # length; with input.widths only the longest) run the executable the plan compiled
  qa = pipeline.make_dataset(path, prog.pipe, tokenizer=prog.tokenizer)
  data = distributed.GlobalBatches(iter(align_reconstruct.batches(a, qa, path, prog.pipe, prog.tokenizer)),
                                   prog.batch_sharding, prefetch=2)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(out_dir, "checkpoints"), a.max_to_keep)
  model = prog.model
  curve, timings = [], {}
  curves = scalars.Scalars(scalars.logdir(out_dir))
  try:
    state = train_loop.start(ckpt, prog.init, prog.state_shardings, data, config.seed, log, "align")
    if prog.llm_from:
      same_llm_source(prog.llm_from, out_dir, int(state.step))
    curves.resume_at(int(state.step))
    _describe(config, prog, state, log)
    if a.reconstructs():
      log(align_reconstruct.survey(a, path, prog.pipe, prog.tokenizer))
    start_eval = _eval_before(prog, state, data_dir, out_dir, log)
    if int(state.step) == 0:  # a resumed run's first file holds it already
      curves.write(0, start_eval, prefix="eval/")
    state, steps_per_s = train_loop.run(
        prog.step, state, data, total_steps=prog.total_steps, ckpt=ckpt, cfg=a, log=log, name="align",
        batch_size=a.batch_size, max_bad_steps=a.max_bad_steps, curve=curve,
        describe=lambda m: f"soft-token norm {float(m['soft_norm']):.3f} (token embeddings {prog.embed_norm:.3f})",
        evaluate=lambda s: evaluate(prog, prog.params_of(s), data_dir), fmt=lambda m: f"answer NLL {m['answer_nll']:.4f}",
        scalars=curves, timings=timings, started=started)
    final = _evaluate_all(prog, prog.params_of(state), data_dir)
    curves.write(prog.total_steps, final, prefix="eval/")
  finally:
    ckpt.close()
    curves.close()
    data.close()
  skipped = int(jax.device_get(state.skipped))
  log(f"align: final eval answer NLL {final['answer_nll']:.4f} (" +
      ", ".join(f"{t} {final[f'answer_nll/{t}']:.3f}" for t in schema.TASKS if f"answer_nll/{t}" in final) +
      f"); {skipped} steps skipped")
  if a.reconstructs():
    log(f"align: reconstruction NLL {final['reconstruction_nll']:.4f} own history, "
        f"{final['reconstruction_nll_rolled']:.4f} another row's (before training: "
        f"{start_eval['reconstruction_nll']:.4f} / {start_eval['reconstruction_nll_rolled']:.4f}), "
        f"on {final['reconstruction_rows']} align-eval rows")
  result = {"eval": final, "eval_before": start_eval, "steps_per_s": steps_per_s, **timings,
            "examples_per_s": None if steps_per_s is None else steps_per_s * a.batch_size,
            "skipped_steps": skipped, **({"title_fit": prog.title_fit} if prog.title_fit else {}),
            **({"llm_from": prog.llm_from} if prog.llm_from else {}),
            "loss_curve": curve}  # [step, mean training loss since the last progress line], this run's steps
  align_export.save(os.path.join(out_dir, "export"), {
      "adapter": dataclasses.asdict(model.adapter.cfg),
      "align": {"mode": a.mode, "user": a.user, "place": a.place, "system_prompt": a.system_prompt},
      "llm": dataclasses.asdict(_absolute(blocks.read(config, LLMSource))),
      # relative to the export, so a copied or moved workdir reads its own Stage 1 (export.encoder_dir)
      "encoder_export": os.path.relpath(prog.encoder_export, os.path.join(out_dir, "export")), "encoder_checksum": align_export.checksum(prog.start_params["encoder"]),
      "metrics": result}, exported_params(prog, state))
  return result


def _evaluate_all(prog: Program, params, data_dir: str) -> dict:
  """The eval answer NLL and, for a run with reconstruction rows, the reconstruction eval."""
  out = evaluate(prog, params, data_dir)
  if prog.cfg.reconstructs():
    out.update(align_reconstruct.evaluate(prog, params, data_dir))
  return out


def finish(config, workdir: str, log=print) -> None:
  """A finished Stage 2 keeps of its checkpoints what `align.keep_checkpoints` says (a full
  fine-tune's each hold the LLM and its Adam state: ~0.9 GB with SmolLM2-135M)."""
  checkpoint_lib.prune(os.path.join(workdir, "align", "checkpoints"),
                       blocks.read(config, AlignConfig).keep_checkpoints, log,
                       key="align.keep_checkpoints")


def _describe(config, prog: Program, state: AlignState, log) -> None:
  """What trains, on what, for how long; the title fit's quality when the adapter starts from it."""
  a, model = prog.cfg, prog.model
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  source = (f"the last {choices.TEXT_CLICKS[a.user]} clicked titles as text (no encoder, no soft tokens)"
            if a.user in choices.TEXT_CLICKS else
            f"oracle: each click's mean title embedding from the LLM -> {model.adapter.cfg.name} adapter "
            f"({model.num_soft} soft tokens, {a.place})" if a.user == choices.ORACLE else
            f"{model.encoder.cfg.name} encoder ({'trains' if a.train_encoder else 'frozen'}) -> "
            f"{model.adapter.cfg.name} adapter ({model.num_soft} soft tokens, {a.place})")
  log(f"align: {source} -> LLM {blocks.read(config, LLMSource).model} ({model.llm.cfg.dtype}); mode {a.mode}, "
      f"user {a.user}; training {count(state.params):,} of {count(prog.start_params):,} parameters; "
      f"{prog.total_steps} steps of batch {a.batch_size}, mesh {dict(prog.mesh.shape)}")
  if a.reconstructs():
    log(align_reconstruct.describe(a, prog.total_steps - a.reconstruct_steps))
  if prog.llm_from:
    log(f"align: the LLM starts from {a.llm_from}'s fine-tuned LLM (align.llm_from; weights' sum of squares "
        f"{prog.llm_from['checksum']:.6g}), {'held' if a.mode == 'adapter' else 'trained on'} in this run")
  if a.contrast_weight:
    log(f"align: loss = answer NLL + {a.contrast_weight:g} x softplus(own - previous row's user's answer NLL per "
        "token), over the rows whose previous row has another history (a second pass per step; the logged loss "
        "is the sum)")
  if prog.title_fit:
    f = prog.title_fit
    log(f"align: adapter map '{title_fit.PARAM}' starts as the ridge fit of each click's mean title embedding "
        f"on its {'(zero) ' if a.user == 'zeros' else ''}state: R² {f['r2']:.3f} on {f['clicks']:,} clicks of "
        f"{f['rows']} rows ({f['users']} users); on one row each of {f['heldout_users']} users not fitted on: "
        + (f"R² {f['r2_heldout']:.3f}" if "r2_heldout" in f else "none left in the file"))
  if a.user in ("encoder", "random_encoder") and not a.train_encoder:
    log("align: frozen encoder states are recomputed each step (not cached)")


def _absolute(source):
  """The LLM source with its path absolute (the export is read from other directories)."""
  if source.model == assets.DEFAULT_MODEL:
    return source
  return dataclasses.replace(source, model=os.path.abspath(source.model))


def exported_params(prog: Program, state: AlignState) -> dict:
  """What the export holds: the trained groups, the encoder whenever it is not Stage 1's, and the
  LLM whenever it is not `llm.model`'s."""
  saved = dict(state.params)
  if prog.cfg.user == "random_encoder" and "encoder" not in saved:
    saved["encoder"] = prog.frozen["encoder"]
  if prog.cfg.llm_from and "llm" not in saved:  # held, but not `llm.model`'s weights
    saved["llm"] = prog.frozen["llm"]
  return saved


def same_data(llm_from: str, workdir: str) -> None:
  """`align.llm_from`: the source run's data stage must be this run's (the same fingerprint), else
  its fine-tuned LLM may have trained on this run's eval questions; a refusal names the differing keys."""
  paths = [os.path.join(w, "data", workdir_lib.FINGERPRINT) for w in (llm_from, workdir)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise align_export.ExportError(f"align.llm_from={llm_from!r}: {missing[0]} is missing; the source must be a "
                                   "workdir whose data and align stages ran, on this run's data")
  theirs, ours = (atomic.read_json(p) for p in paths)
  differ = workdir_lib.fingerprint_diff(theirs, ours)
  if differ:  # every key, as typed (an llm.model spelled otherwise differs too: the message names it)
    raise align_export.ExportError(
        f"align.llm_from={llm_from!r}: its data stage differs from this run's ({workdir}) in "
        + ", ".join(f"{k} ({there} there, {here} here)" for k, there, here in differ)
        + ": its LLM may have trained on this run's eval questions; start from a run on the same data")


def same_llm_source(llm_from: dict, out_dir: str, step: int) -> None:
  """`align.llm_from`: the source LLM's checksum is kept when the run starts; a run resumed after
  that workdir's LLM changed (its Stage 2 rerun) is refused, naming it."""
  path = os.path.join(out_dir, "llm_from.json")
  if step == 0:
    if distributed.is_main():
      atomic.write_json(path, llm_from)
    return
  kept = atomic.read_json(path)
  if os.path.normpath(kept["workdir"]) != llm_from["workdir"] or not np.isclose(kept["checksum"], llm_from["checksum"], rtol=1e-12):
    raise align_export.ExportError(
        f"align.llm_from={llm_from['workdir']!r}: this run started from {os.path.normpath(kept['workdir'])!r}'s LLM (weights' sum of "
        f"squares {kept['checksum']:.10g}), which is now {llm_from['checksum']:.10g}: its Stage 2 changed since; "
        "restart this stage (--config.restart=align) or restore that workdir")


def _eval_before(prog: Program, state: AlignState, data_dir: str, out_dir: str, log) -> dict:
  """The eval NLL before training: computed at step 0 and kept, so a resumed run reports the same."""
  path = os.path.join(out_dir, "eval_before.json")
  if int(state.step) == 0:
    result = _evaluate_all(prog, prog.params_of(state), data_dir)
    if distributed.is_main():
      atomic.write_json(path, result)
  else:
    result = atomic.read_json(path)
  log(f"align: eval answer NLL {result['answer_nll']:.4f} before training")
  return result
