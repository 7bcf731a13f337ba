"""Stage 2 alignment: frozen groups stay bit-identical, full FT moves the LLM at its own rate,
non-finite steps are skipped and counted, max_bad_steps stops with good checkpoints only,
resume ends bit-identical, the zeros control never sees the user, bfloat16 works.

A tiny random LLM with SmolLM2's tokenizer (`tests/tiny_llm.py`) stands in for the real one.
"""

import dataclasses
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from uqa_jax import stages
from uqa_jax.config import blocks
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.data import pipeline
from uqa_jax.encoders import export as encoder_export
from uqa_jax.llm import weights
from uqa_jax.soft_prompt import export as align_export
from uqa_jax.soft_prompt import model as uqa_model
from uqa_jax.soft_prompt import title_init
from uqa_jax.stages import align
from uqa_jax.stages import align_reconstruct
from tests.conftest import tiny_llm_config
from tests.conftest import ROOT
from tests.tensorboard_events import read_scalars

QUIET = lambda *_: None


@pytest.fixture(scope="module")
def base(tiny_llm_base):
  """(config, workdir with finished data and pretrain stages) on the tiny LLM (shared per session)."""
  llm_dir, workdir = tiny_llm_base
  return _config(llm_dir), workdir


@pytest.fixture(scope="module")
def straight(base, tmp_path_factory):
  """An uninterrupted adapter-only run of 6 steps: (config, workdir, result)."""
  config, workdir = _workdir(base, tmp_path_factory.mktemp("align-straight"))
  return config, workdir, stages.run("align", config, workdir, log=QUIET)


def _config(llm_dir, **align_fields):
  config = tiny_llm_config(llm_dir)
  config.stages = ("data", "pretrain", "align")
  a = config.align
  a.batch_size, a.steps, a.log_every, a.checkpoint_every = 4, 6, 2, 2
  a.schedule, a.mode, a.learning_rate = "constant", "adapter", 1e-4  # the official recipe, not the demo's
  for k, v in align_fields.items():
    setattr(a, k, v)
  return config


def _workdir(base, tmp_path, **align_fields):
  """A fresh workdir holding base's data and pretrain outputs; the config with `align_fields`."""
  config, workdir = base
  for stage in ("data", "pretrain"):
    shutil.copytree(os.path.join(workdir, stage), tmp_path / stage)
  return _config(config.llm.model, **align_fields), str(tmp_path)


def _batches(parts, workdir, n):
  path = os.path.join(workdir, "data", "align_data_train.arrow")
  data = iter(pipeline.make_dataset(path, parts.pipe, tokenizer=parts.tokenizer))
  return [jax.tree.map(jnp.asarray, next(data)) for _ in range(n)]


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_adapter_only_training_leaves_encoder_and_llm_bit_identical(straight):
  config, workdir, result = straight
  assert result["skipped_steps"] == 0 and np.isfinite(result["eval"]["answer_nll"])
  model, params, spec = align_export.load(os.path.join(workdir, "align", "export"))
  assert spec["saved"] == ["adapter"]  # nothing else was trained, so nothing else is saved
  _, trained_encoder, _ = encoder_export.load(os.path.join(workdir, "pretrain", "export"))
  _, llm = weights.load(config.llm.model)
  _assert_trees_equal(params["encoder"], trained_encoder)
  _assert_trees_equal(params["llm"], llm)
  # The step itself: frozen groups are inputs only, the state holds the adapter only.
  parts = align.build(config, workdir)
  state = parts.init(None)
  start_adapter = jax.device_get(state.params["adapter"])
  for batch in _batches(parts, workdir, 2):
    state, _ = parts.step(state, batch)
  assert list(state.params) == ["adapter"]
  _assert_trees_equal(parts.frozen["encoder"], trained_encoder)
  _assert_trees_equal(parts.frozen["llm"], llm)
  assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params["adapter"]),
                                                       jax.tree.leaves(start_adapter)))
  # The export reloads to the model the stage evaluated.
  loaded = align.evaluate(parts, params, os.path.join(workdir, "data"))
  np.testing.assert_allclose(loaded["answer_nll"], result["eval"]["answer_nll"], rtol=1e-6)


def test_llm_steps_train_the_llm_then_freeze_it_while_the_adapter_goes_on(base, tmp_path):
  """`align.llm_steps=2` in Stage 2's own step: the LLM moves in steps 1-2, then stays bit for bit
  (its rate 0, weight decay included) while the adapter keeps training."""
  config, workdir = _workdir(base, tmp_path, mode="full", llm_learning_rate=1e-3, weight_decay=0.1, llm_steps=2)
  parts = align.build(config, workdir)
  state = parts.init(None)
  snapshots = [jax.device_get(state.params)]
  for batch in _batches(parts, workdir, 4):
    state, metrics = parts.step(state, batch)
    assert not bool(metrics["skipped"])
    snapshots.append(jax.device_get(state.params))
  moved = lambda a, b, group: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a[group]),
                                                                            jax.tree.leaves(b[group])))
  assert moved(snapshots[0], snapshots[2], "llm")  # trained in its phase
  _assert_trees_equal(snapshots[2]["llm"], snapshots[4]["llm"])  # then frozen, exactly
  assert moved(snapshots[2], snapshots[4], "adapter")


def test_contrast_weight_trains_on_the_answer_loss_plus_the_contrastive_term(base, tmp_path):
  """`align.contrast_weight=0.5`: the step's logged loss is `contrast.contrastive_loss` of the
  parameters before it (not the plain answer loss), the stage says so, and the weight is in the
  fingerprint (0, the old behaviour, is not)."""
  from uqa_jax.soft_prompt import contrast
  config, workdir = _workdir(base, tmp_path, contrast_weight=0.5)
  parts = align.build(config, workdir)
  state = parts.init(None)
  batch = _batches(parts, workdir, 1)[0]
  params = parts.params_of(state)
  want = float(contrast.contrastive_loss(params, batch, model=parts.model, weight=0.5))
  plain = float(uqa_model.answer_loss(params, batch, model=parts.model))
  _, metrics = parts.step(state, batch)
  assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5) and abs(want - plain) > 1e-3
  assert align.fingerprint(config)["align"]["contrast_weight"] == 0.5
  assert "contrast_weight" not in align.fingerprint(_config(config.llm.model))["align"]
  del parts, state
  gc.collect()
  lines = []
  config.align.steps = 2
  stages.run("align", config, workdir, log=lines.append)
  assert any("loss = answer NLL + 0.5 x softplus(own - previous row's user's" in line for line in lines), lines


def test_reconstruction_steps_hold_the_llm_then_mix_into_the_qa_steps(base, tmp_path):
  """`align.reconstruct_steps=2`, `reconstruct_every=2`, 3 QA steps, a full fine-tune: the run's
  batches are reconstruction, reconstruction, QA, reconstruction, QA; the LLM stays bit for bit in
  the first two steps while the adapter moves, then trains. The stage reports the reconstruction
  NLL (own and another row's history) before and after, on the align-eval rows."""
  config, workdir = _workdir(base, tmp_path, mode="full", llm_learning_rate=1e-3, steps=3, reconstruct_steps=2,
                             reconstruct_every=2, reconstruct_learning_rate=1e-2, keep_checkpoints="all",
                             max_to_keep=3)
  parts = align.build(config, workdir)
  path = os.path.join(workdir, "data", "align_data_train.arrow")
  a = blocks.read(config, AlignConfig)
  qa = pipeline.make_dataset(path, parts.pipe, tokenizer=parts.tokenizer)
  data = iter(align_reconstruct.batches(a, qa, path, parts.pipe, parts.tokenizer))
  batches = [jax.tree.map(jnp.asarray, next(data)) for _ in range(parts.total_steps)]
  assert parts.total_steps == 5
  assert [bool((np.asarray(b["task"]) == -1).all()) for b in batches] == [True, True, False, True, False]
  state = parts.init(None)
  snapshots = [jax.device_get(state.params)]
  for batch in batches[:3]:
    state, metrics = parts.step(state, batch)
    assert not bool(metrics["skipped"])
    snapshots.append(jax.device_get(state.params))
  _assert_trees_equal(snapshots[2]["llm"], snapshots[0]["llm"])  # frozen while reconstructing
  moved = lambda x, y, group: any(not np.array_equal(p, q) for p, q in zip(jax.tree.leaves(x[group]),
                                                                            jax.tree.leaves(y[group])))
  assert moved(snapshots[0], snapshots[2], "adapter") and moved(snapshots[2], snapshots[3], "llm")
  del parts, state, snapshots
  gc.collect()
  lines = []
  result = stages.run("align", config, workdir, log=lines.append)
  assert any("reconstruction rows: the first 2 steps write out the last 3 clicks' title" in line
             and "every 2-th of the 3 QA steps is a reconstruction batch (1;" in line for line in lines), lines
  assert any(re.match(r"align: of \d+ reconstruction examples, \d+ ask for fewer than 3 clicks", line) for line in lines)
  for when in ("eval_before", "eval"):
    r = result[when]
    assert np.isfinite(r["reconstruction_nll"]) and np.isfinite(r["reconstruction_nll_rolled"]), r
    assert r["reconstruction_rows"] > 0 and np.isfinite(r["answer_nll"])
  assert result["eval"]["reconstruction_nll"] != result["eval_before"]["reconstruction_nll"]
  # Resumed from checkpoint 2 (both streams' places restored), it ends bit for bit as it did.
  load = lambda: ocp.StandardCheckpointer().restore(os.path.join(workdir, "align", "export", "params"))
  straight_params = load()
  checkpoints = os.path.join(workdir, "align", "checkpoints")
  assert sorted(os.listdir(checkpoints)) == ["2", "4", "5"]
  for later in ("4", "5"):
    shutil.rmtree(os.path.join(checkpoints, later))
  shutil.rmtree(os.path.join(workdir, "align", "export"))
  os.remove(os.path.join(workdir, "align", "result.json"))
  lines.clear()
  stages.run("align", config, workdir, log=lines.append)
  assert "align: resumed from step 2" in " ".join(lines), lines
  _assert_trees_equal(load(), straight_params)


@pytest.mark.parametrize("source", ["llm", "encoder"])
def test_loading_with_a_replaced_source_is_an_error(straight, tmp_path, source):
  """An export records what it was aligned with; another LLM or encoder export is refused."""
  export = tmp_path / "align" / "export"  # in a workdir's layout: it reads its Stage 1 export beside it
  shutil.copytree(os.path.join(straight[1], "align", "export"), export)
  shutil.copytree(os.path.join(straight[1], "pretrain", "export"), tmp_path / "pretrain" / "export")
  with open(export / "align.json", encoding="utf-8") as f:
    spec = json.load(f)
  if source == "llm":
    spec["adapter"]["embed_rms"] *= 1.01
  else:
    spec["encoder_checksum"] *= 1.01
  with open(export / "align.json", "w", encoding="utf-8") as f:
    json.dump(spec, f)
  match = "is not the one this model was aligned with" if source == "llm" else "holds other weights"
  with pytest.raises(align_export.ExportError, match=match):
    align_export.load(str(export))


def test_a_copied_workdir_reads_its_own_encoder_and_refuses_another(straight, tmp_path):
  """The align export names its Stage 1 export relative to itself: a copy loads the copy's, and a
  copy whose encoder export holds other weights is refused by name (it once read the original's)."""
  _, workdir, _ = straight
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints"))
  spec_path = copy / "align" / "export" / align_export.SPEC_FILE
  spec = json.loads(spec_path.read_text())
  assert spec["encoder_export"] == os.path.join(os.pardir, os.pardir, "pretrain", "export")
  _, params, _ = align_export.load(str(copy / "align" / "export"))
  _assert_trees_equal(params["encoder"], encoder_export.load(str(copy / "pretrain" / "export"))[1])
  model, enc, info = encoder_export.load(str(copy / "pretrain" / "export"))
  encoder_export.save(str(copy / "pretrain" / "export"), model, jax.tree.map(lambda x: np.asarray(x) + 1, enc),
                      has_time=info["has_time"])
  with pytest.raises(align_export.ExportError, match="holds other weights"):
    align_export.load(str(copy / "align" / "export"))
  # an export from before the relative path, copied: its absolute path is another workdir's
  spec_path.write_text(json.dumps({**spec, "encoder_export": os.path.join(workdir, "pretrain", "export")}))
  with pytest.raises(align_export.ExportError, match="not on this workdir's"):
    align_export.load(str(copy / "align" / "export"))
  spec_path.write_text(spec_path.read_text()[:40])  # truncated: named, not a bare JSONDecodeError
  with pytest.raises(ValueError, match=re.escape(str(spec_path)) + ": not valid JSON"):
    align_export.load(str(copy / "align" / "export"))


def test_an_export_made_with_bfloat16_weights_loads_them_rounded_as_trained(straight, tmp_path):
  """Stage 3 must see the LLM as Stage 2 stored it: align.json's llm.param_dtype is applied, and
  the weights equal those a bfloat16-storing Stage 2 holds (loaded by its own path)."""
  export = tmp_path / "align" / "export"  # in a workdir's layout: it reads its Stage 1 export beside it
  shutil.copytree(os.path.join(straight[1], "align", "export"), export)
  shutil.copytree(os.path.join(straight[1], "pretrain", "export"), tmp_path / "pretrain" / "export")
  with open(export / "align.json", encoding="utf-8") as f:
    spec = json.load(f)
  assert spec["llm"]["param_dtype"] == "float32"  # what the run recorded
  spec["llm"]["param_dtype"] = "bfloat16"
  with open(export / "align.json", "w", encoding="utf-8") as f:
    json.dump(spec, f)
  model, params, _ = align_export.load(str(export))
  assert model.llm.cfg.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params["llm"])} == {jnp.dtype(jnp.bfloat16)}
  config = _config(straight[0].llm.model)
  config.llm.param_dtype = "bfloat16"
  _assert_trees_equal(params["llm"], align.build(config, straight[1]).frozen["llm"])


def test_full_fine_tuning_moves_the_llm_at_its_own_learning_rate(base, tmp_path):
  """Adam's first step moves each weight by about its rate (|m/sqrt(v)| = 1): LLM 1e-5, adapter 1e-3."""
  config, workdir = _workdir(base, tmp_path, mode="full", learning_rate=1e-3, llm_learning_rate=1e-5)
  table = lambda: sum(1 for x in jax.live_arrays() if x.shape == (config_vocab(config), 32))  # the tiny LLM's
  gc.collect()
  tables = table()
  parts = align.build(config, workdir)
  state = parts.init(None)
  gc.collect()
  assert table() == tables + 3  # the trained embedding and its two Adam moments: the loaded one was donated
  before = jax.device_get(state.params)
  again = parts.init(None)  # the loaded LLM was taken over: read again, the same values
  _assert_trees_equal(jax.device_get(again.params), before)
  del again
  state, m = parts.step(state, _batches(parts, workdir, 1)[0])
  assert not bool(m["skipped"]) and sorted(state.params) == ["adapter", "llm"]
  assert "encoder" in parts.frozen  # encoder frozen unless align.train_encoder
  for group, lr in (("llm", 1e-5), ("adapter", 1e-3)):
    delta = np.concatenate([np.abs(np.ravel(a - b)) for a, b in zip(
        jax.tree.leaves(jax.device_get(state.params[group])), jax.tree.leaves(before[group]))])
    assert np.max(delta) == pytest.approx(lr, rel=1e-2), group  # float32 rounding of w - lr
    assert np.median(delta) > 0.5 * lr, group  # most weights moved by about the rate


def config_vocab(config):
  return weights.read_config(config.llm.model).vocab_size


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_an_injected_non_finite_step_is_skipped_and_counted(base, tmp_path, what):
  config, workdir = _workdir(base, tmp_path)

  def poisoned(params, batch, *, model):
    loss = uqa_model.answer_loss(params, batch, model=model)
    bad = batch["poison"][0]
    if what == "loss":
      return jnp.where(bad, jnp.nan, loss)
    s = jnp.where(bad, 0.0 * loss, 1.0 + 0.0 * loss)  # finite value; gradient 0 * inf = NaN when bad
    return loss + 0.0 * jnp.sqrt(s)

  parts = align.build(config, workdir, loss_fn=poisoned)
  batches = _batches(parts, workdir, 3)
  state = parts.init(None)
  for i, batch in enumerate(batches):
    before = jax.device_get((state.params, state.opt_state))
    state, m = parts.step(state, dict(batch, poison=jnp.full((4,), i == 1)))
    if i == 1:
      assert bool(m["skipped"]) and int(m["bad_in_row"]) == 1
      assert (not np.isfinite(float(m["loss"]))) == (what == "loss")
      _assert_trees_equal(jax.device_get((state.params, state.opt_state)), before)
    else:
      assert not bool(m["skipped"]) and int(m["bad_in_row"]) == 0
  assert int(state.skipped) == 1 and int(state.step) == 3


def test_max_bad_steps_stops_the_run_and_every_checkpoint_is_finite(base, tmp_path):
  """Step 1 runs at rate 0 (warm-up); from step 2 the rate 1e38 overflows the parameters: every
  later step is skipped, the third in a row stops the run; checkpoints 2 and 3 hold step 1's state."""
  config, workdir = _workdir(base, tmp_path, schedule="warmup_cosine", warmup_steps=2, learning_rate=1e38,
                             max_bad_steps=3, checkpoint_every=1, max_to_keep=10, steps=10)
  lines = []
  with pytest.raises(FloatingPointError, match=r"align: 3 steps in a row \(steps 2-4\) had a non-finite loss, "
                                               r"gradient or updated parameter and were skipped \(max_bad_steps=3\); stopped without "
                                               r"saving. The newest checkpoint is step 3"):
    stages.run("align", config, workdir, log=lines.append)
  assert any(line.startswith("align: step 2/10 ") and "skipped 1 " in line for line in lines), lines
  ckpt_dir = os.path.join(workdir, "align", "checkpoints")
  assert sorted(os.listdir(ckpt_dir), key=int)[-1] == "3"
  restored = [ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, s, "state")) for s in ("1", "3")]
  for leaf in jax.tree.leaves(restored):
    assert np.all(np.isfinite(leaf))
  _assert_trees_equal(restored[0]["params"], restored[1]["params"])
  assert int(restored[1]["skipped"]) == 2
  assert not os.path.exists(os.path.join(workdir, "align", "export"))


def _flags(config) -> list[str]:
  """Command-line overrides that make configs/smoke.py into `config` (what `_config` changes)."""
  a = config.align
  return ["--config.stages=('data','pretrain','align')", f"--config.llm.model={config.llm.model}",
          f"--config.input.max_text_len={config.input.max_text_len}", f"--config.pretrain.steps={config.pretrain.steps}",
          f"--config.align.batch_size={a.batch_size}", f"--config.align.steps={a.steps}",
          f"--config.align.log_every={a.log_every}", f"--config.align.checkpoint_every={a.checkpoint_every}",
          f"--config.align.schedule={a.schedule}", f"--config.align.mode={a.mode}",
          f"--config.align.learning_rate={a.learning_rate}"]


def test_stage2_compiles_one_step_one_eval_and_three_set_up_executables(base, tmp_path):
  """A fresh process (no executable from an earlier test to reuse), a full fine-tune from the
  title fit, chats at one width: the step (compiled by the memory planner, reused by the loop),
  the eval, and three set-up executables: the adapter's init, the title fit's encoder-and-titles
  pass and the first state. Run eagerly, the adapter's init alone compiled ~40 one-op ones."""
  config, workdir = _workdir(base, tmp_path)
  cmd = [sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", workdir,
         "--compilation_cache", "off", *_flags(config), "--config.align.mode=full", "--config.align.adapter_init=titles",
         "--config.align.steps=2", "--config.input.widths=()"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "align", "result.json"), encoding="utf-8") as f:
    result = json.load(f)
  assert "title_fit" in result
  assert result["compile"]["executables"] == 2 + 3, result["compile"]


@pytest.mark.slow  # ~70 s: `make test-slow`; the default run keeps Stage 1's kill-and-resume test
def test_a_killed_run_resumes_and_ends_bit_identical(base, straight, tmp_path):
  """SIGKILL right after step 4's progress line (checkpoint 2 saved; checkpoint 4, which follows
  that line, perhaps started), then the same command again: it resumes from 2 or 4 and its
  export equals the uninterrupted in-process run's bit for bit."""
  config, workdir = _workdir(base, tmp_path)
  cmd = [sys.executable, "-m", "uqa_jax.main", "--config", "configs/smoke.py", "--workdir", workdir, *_flags(config)]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if line.startswith("align: step 4/6"):
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, "align", "export"))
  resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert re.search(r"align: resumed from step [24]", resumed.stdout), resumed.stdout[-2000:]
  load = lambda w: ocp.StandardCheckpointer().restore(os.path.join(w, "align", "export", "params"))
  _assert_trees_equal(load(workdir), load(straight[1]))


def test_zeros_control_feeds_zeros_in_training_and_evaluation(base, tmp_path):
  """With user=zeros, another user's history changes neither the training step nor eval NLL."""
  config, workdir = _workdir(base, tmp_path, user="zeros")
  parts = align.build(config, workdir)
  a, b = _batches(parts, workdir, 2)
  history = {k: v for k, v in b.items() if k.startswith("uni_seq") or k in ("lengths", "timestamps")}
  swapped = dict(a, **history)  # a's questions, b's users
  assert not np.array_equal(a["uni_seq_item_id"], swapped["uni_seq_item_id"])
  results = []
  for batch in (a, swapped):
    state, m = parts.step(parts.init(None), batch)
    nll = parts.eval_nll(parts.params_of(state), batch)[0]
    results.append((float(m["loss"]), jax.device_get(state.params), np.asarray(nll)))
  assert results[0][0] == results[1][0]
  _assert_trees_equal(results[0][1], results[1][1])
  np.testing.assert_array_equal(results[0][2], results[1][2])
  # The real user's path does see the history (the same check fails for it).
  config, workdir = _workdir(base, tmp_path / "encoder")
  parts = align.build(config, workdir)
  losses = [float(parts.step(parts.init(None), batch)[1]["loss"]) for batch in (a, swapped)]
  assert losses[0] != losses[1]


def test_random_encoder_control_aligns_an_untrained_encoder_and_exports_it(base, tmp_path):
  config, workdir = _workdir(base, tmp_path, user="random_encoder")
  parts = align.build(config, workdir)
  _, trained, _ = encoder_export.load(os.path.join(workdir, "pretrain", "export"))
  random = parts.frozen["encoder"]
  assert jax.tree.structure(random) == jax.tree.structure(trained)
  assert all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(random), jax.tree.leaves(trained)))
  _assert_trees_equal(random, align.build(config, workdir).frozen["encoder"])  # seeded
  state, _ = parts.step(parts.init(None), _batches(parts, workdir, 1)[0])
  saved = align.exported_params(parts, state)
  assert sorted(saved) == ["adapter", "encoder"]
  _assert_trees_equal(saved["encoder"], random)


def test_bfloat16_llm_keeps_adapter_and_loss_in_float32(base, tmp_path):
  losses, llm_bytes = {}, {}
  for dtype, param_dtype in (("float32", "float32"), ("bfloat16", "float32"), ("bfloat16", "bfloat16")):
    config, workdir = _workdir(base, tmp_path / f"{dtype}-{param_dtype}")
    config.llm.dtype, config.llm.param_dtype = dtype, param_dtype
    parts = align.build(config, workdir)
    batch = _batches(parts, workdir, 1)[0]
    state = parts.init(None)
    soft = parts.model.soft_tokens(parts.params_of(state), batch)
    embeds = parts.model.llm.apply({"params": parts.frozen["llm"]}, batch["input_ids"], method="embed")
    assert embeds.dtype == jnp.dtype(dtype)  # the LLM really computes in the configured dtype
    # the frozen LLM is stored as configured, loaded straight from the float32 checkpoint
    assert {x.dtype for x in jax.tree.leaves(parts.frozen["llm"])} == {jnp.dtype(param_dtype)}
    llm_bytes[param_dtype] = sum(x.nbytes for x in jax.tree.leaves(parts.frozen["llm"]))
    state, m = parts.step(state, batch)
    assert soft.dtype == jnp.float32 and m["loss"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    assert not bool(m["skipped"])
    losses[dtype, param_dtype] = float(m["loss"])
  reference = losses["float32", "float32"]
  for key in (("bfloat16", "float32"), ("bfloat16", "bfloat16")):
    assert losses[key] != reference and losses[key] == pytest.approx(reference, rel=2e-2)
  assert llm_bytes["bfloat16"] * 2 == llm_bytes["float32"]
  config.llm.dtype = "float16"
  with pytest.raises(blocks.ConfigError, match="llm.dtype='float16'; expected float32 or bfloat16"):
    stages.check_config(config)
  # a full fine-tune in bfloat16 weights would round the LLM's 1e-6 updates away: refused, named,
  # when the config is read (before Stage 1 would train)
  config.llm.dtype, config.align.mode = "bfloat16", "full"
  with pytest.raises(blocks.ConfigError, match="llm.param_dtype='bfloat16' with align.mode='full'"):
    stages.check_config(config)


@pytest.mark.parametrize("place", ["prefix", "placeholder"])
def test_logits_at_the_answer_only_equal_the_full_reference_path(base, tmp_path, place):
  """The pipeline's `answer_at` path (logits at A positions) == logits everywhere + loss_mask."""
  config, workdir = _workdir(base, tmp_path, place=place)
  parts = align.build(config, workdir)
  batch = _batches(parts, workdir, 1)[0]
  params = parts.params_of(parts.init(None))
  shape = (batch["input_ids"].shape[1], batch["answer_at"].shape[1])
  assert batch["answer_at"].shape[0] == 4
  assert shape in tuple(config.input.widths) + ((config.input.max_text_len, config.input.max_answer_len),)
  np.testing.assert_array_equal(np.sum(batch["answer_at"] >= 0, axis=1), np.sum(batch["loss_mask"], axis=1))
  batch = dict(batch, valid=jnp.array([True, True, True, False]))  # an eval batch's padding row
  fast = uqa_model.answer_nll(params, batch, model=parts.model)
  reference = uqa_model.answer_nll(params, {k: v for k, v in batch.items() if k != "answer_at"}, model=parts.model)
  for x, y in zip(fast, reference):
    np.testing.assert_allclose(x, y, rtol=1e-5)
  assert float(fast[1][3]) == 0.0


def test_an_answer_longer_than_max_answer_len_is_an_error_naming_the_row(base, tmp_path):
  config, workdir = _workdir(base, tmp_path)
  config.input.max_answer_len, config.input.widths = 2, ()  # widths must fit within it
  parts = align.build(config, workdir)
  with pytest.raises(ValueError, match=r"align_data_train.arrow, row \d+: the answer and its end-of-turn token are "
                                       r"\d+ tokens, over max_answer_len=2"):
    _batches(parts, workdir, 1)


def test_placeholder_splice_trains_and_differs_from_prefix(base, tmp_path):
  losses = {}
  for place in ("prefix", "placeholder"):
    config, workdir = _workdir(base, tmp_path / place, place=place)
    parts = align.build(config, workdir)
    batch = _batches(parts, workdir, 1)[0]
    assert np.all(np.asarray(batch["question_at"]) > 0)
    losses[place] = float(parts.step(parts.init(None), batch)[1]["loss"])
  assert np.isfinite(losses["placeholder"]) and losses["placeholder"] != losses["prefix"]


def test_oracle_reader_aligns_on_title_embeddings_and_its_export_loads(base, tmp_path):
  """user=oracle_titles: the adapter reads the LLM's title embeddings (width d_llm), not the
  encoder; the export reloads with that width; only the titles move the soft tokens."""
  config, workdir = _workdir(base, tmp_path, user="oracle_titles", steps=2)
  stages.run("align", config, workdir, log=QUIET)
  model, params, spec = align_export.load(os.path.join(workdir, "align", "export"))
  assert spec["align"]["user"] == "oracle_titles" and model.adapter_width == model.llm.cfg.d_model
  parts = align.build(config, workdir)
  d = model.llm.cfg.d_model  # the oracle's map starts as the identity (states are LLM embeddings)
  np.testing.assert_array_equal(parts.start_params["adapter"]["proj"]["kernel"], np.eye(d, dtype=np.float32))
  assert np.abs(parts.start_params["adapter"]["proj"]["bias"]).max() < 0.01
  batch = _batches(parts, workdir, 1)[0]
  soft = lambda b: np.asarray(model.soft_tokens(params, b))
  ids_changed = dict(batch, uni_seq_item_id=jnp.roll(batch["uni_seq_item_id"], 1, axis=0))
  np.testing.assert_array_equal(soft(batch), soft(ids_changed))
  titles = uqa_model.TITLE_COLUMN
  assert not np.allclose(soft(batch), soft(dict(batch, **{titles: jnp.roll(batch[titles], 1, axis=0)})))
  with pytest.raises(blocks.ConfigError, match="oracle_titles.*never reads the encoder"):
    blocks.read(_config(config.llm.model, user="oracle_titles", mode="full", train_encoder=True), AlignConfig)


@pytest.mark.parametrize("user", ["encoder", pytest.param("zeros", marks=pytest.mark.slow)])  # zeros: ~20 s
def test_titles_init_fits_the_token_map_to_the_clicked_titles(base, tmp_path, user):
  """adapter_init='titles': `proj` starts as the least-squares map from each click's encoder state
  (zeros for the zeros control) to its title's mean LLM embedding, checked against NumPy's lstsq
  on title means computed by a plain loop; the oracle and text users are refused."""
  config, workdir = _workdir(base, tmp_path, adapter_init="titles", title_fit_rows=12, user=user)
  config.adapter.name, config.adapter.num_tokens = "recent", 2
  parts = align.build(config, workdir)
  table_VxM = np.asarray(parts.start_params["llm"]["embedding"], np.float64)
  # The first rows of the align-train file, in file order.
  cfg = dataclasses.replace(parts.pipe, shuffle=False, num_epochs=1, drop_remainder=False, length_window=0)
  path = os.path.join(workdir, "data", "align_data_train.arrow")
  xs, ys, rows, users = [], [], 0, set()
  held = {}  # the rows after the fitted batches: one per user not fitted on, the first 64
  encode = jax.jit(lambda p, b: parts.model.encoder.apply({"params": p}, b)[0])  # op by op took ~30 s
  for batch in pipeline.make_dataset(path, cfg, tokenizer=parts.tokenizer):
    states = np.asarray(encode(parts.start_params["encoder"], batch))
    fitting = rows < 12
    for b in np.flatnonzero(batch["valid"]):
      n = int(batch["lengths"][b])
      key = (n, batch[uqa_model.TITLE_COLUMN][b, :n].tolist().__repr__())
      if not fitting:
        if key not in users and key not in held and len(held) < title_init.TITLE_FIT_HELDOUT_USERS:
          held[key] = [], []
        else:
          continue
      for t in range(n):
        tokens = [i for i in batch[uqa_model.TITLE_COLUMN][b, t] if i != 0]
        (xs if fitting else held[key][0]).append(states[b, t] if user == "encoder" else np.zeros(states.shape[-1]))
        (ys if fitting else held[key][1]).append(table_VxM[tokens].mean(0) if tokens else np.zeros(table_VxM.shape[1]))
      if fitting:
        users.add(key)
        rows += 1
  x, y = np.array(xs), np.array(ys)
  assert parts.title_fit["clicks"] == len(x) and parts.title_fit["rows"] == rows
  assert parts.title_fit["users"] == len(users) < rows  # several questions per user: fewer users than rows
  assert parts.title_fit["heldout_users"] == len(held) > 0
  # Ridge as documented (penalty 1e-3 x the centred Gram's mean diagonal, intercept free), solved
  # as least squares on rows augmented by sqrt(penalty) x identity.
  xc, yc = x - x.mean(0), y - y.mean(0)
  penalty = 1e-3 * max((xc ** 2).sum() / x.shape[1], 1e-12)
  kernel = np.linalg.lstsq(np.r_[xc, np.sqrt(penalty) * np.eye(x.shape[1])],
                           np.r_[yc, np.zeros((x.shape[1], y.shape[1]))], rcond=None)[0]
  theirs = xc @ kernel + y.mean(0)
  proj = parts.start_params["adapter"]["proj"]
  ours = x @ proj["kernel"] + proj["bias"]
  np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max())
  want_r2 = 1 - ((y - theirs) ** 2).sum() / (yc ** 2).sum()
  assert parts.title_fit["r2"] == pytest.approx(want_r2, abs=1e-3)
  hx = np.concatenate([np.array(v[0]) for v in held.values()])
  hy = np.concatenate([np.array(v[1]) for v in held.values()])
  predicted = (hx - x.mean(0)) @ kernel + y.mean(0)
  want_heldout = 1 - ((hy - predicted) ** 2).sum() / ((hy - hy.mean(0)) ** 2).sum()
  assert parts.title_fit["r2_heldout"] == pytest.approx(want_heldout, abs=1e-3)
  if user == "zeros":
    assert not np.asarray(proj["kernel"]).any()
  else:
    assert parts.title_fit["r2"] > 0.05  # the states say something about the clicked titles
  for other in ("oracle_titles", "text20"):
    with pytest.raises(blocks.ConfigError, match="adapter_init='titles'"):
      blocks.read(_config(config.llm.model, user=other, mode="full", adapter_init="titles"), AlignConfig)


def test_training_curves_are_written_for_tensorboard(straight):
  """align/tensorboard holds the loss at every progress line, the learning rate, the gradient
  norm, the eval NLL before and after, and the stage's compile figures, at their steps."""
  config, workdir, result = straight
  got = read_scalars(os.path.join(workdir, "align", "tensorboard"))
  assert got["train/loss"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in result["loss_curve"]]
  assert [s for s, _ in got["train/learning_rate/adapter"]] == [2, 4, 6]
  assert all(v == pytest.approx(config.align.learning_rate) for _, v in got["train/learning_rate/adapter"])
  assert all(v > 0 for _, v in got["train/grad_norm"]) and len(got["train/examples_per_s"]) == 3
  assert got["eval/answer_nll"] == [(0, pytest.approx(result["eval_before"]["answer_nll"])),
                                    (6, pytest.approx(result["eval"]["answer_nll"]))]
  assert got["compile/executables"] == [(0, result["compile"]["executables"])]
  assert result["first_step_seconds"] > 0


@pytest.mark.parametrize("mode", ["full", "adapter"])
def test_bfloat16_compute_tracks_float32_and_keeps_float32_master_weights(base, tmp_path, mode):
  """Mixed precision as accelerators run it: `llm.dtype=bfloat16` with float32 weights
  (`llm.param_dtype`), full fine-tuning too. Over 3 steps of the same batches from the same
  start, the losses stay within 3% of float32's, and every trained parameter and Adam moment,
  the LLM's included, stays float32."""
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config, workdir = _workdir(base, tmp_path / dtype, mode=mode, learning_rate=1e-3)
    config.llm.dtype = dtype
    config.align.llm_learning_rate = 1e-4
    parts = align.build(config, workdir)
    state = parts.init(None)
    losses[dtype] = []
    for batch in _batches(parts, workdir, 3):
      state, m = parts.step(state, batch)
      assert m["loss"].dtype == jnp.float32 and not bool(m["skipped"])
      losses[dtype].append(float(m["loss"]))
    assert ("llm" in state.params) == (mode == "full")
    floats = [x for x in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}
  assert losses["bfloat16"] != losses["float32"]  # bfloat16 really computed
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=3e-2)
