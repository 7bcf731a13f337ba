"""`align.llm_from`: a Stage 2 that starts from another run's fine-tuned LLM (a text20 run's), on a
tiny random LLM: the weights it holds and exports are that run's, bit for bit, and an export
without a fine-tuned LLM, or made from another LLM, is refused by name."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from tests.conftest import tiny_llm_config
from uqa_jax import stages
from uqa_jax.llm import weights
from uqa_jax.runtime import atomic
from uqa_jax.soft_prompt import export as align_export

QUIET = lambda *_: None


def _config(llm_dir, **align):
  config = tiny_llm_config(llm_dir)
  config.stages = ("data", "pretrain", "align")
  a = config.align
  a.schedule, a.batch_size, a.steps, a.checkpoint_every = "constant", 4, 2, 2
  for key, value in align.items():
    setattr(a, key, value)
  return config


def _workdir(base, path):
  for stage in ("data", "pretrain"):
    shutil.copytree(os.path.join(base, stage), os.path.join(path, stage))
  return str(path)


@pytest.fixture(scope="module")
def text_run(tiny_llm_base, tmp_path_factory):
  """A text20 run's workdir: the LLM fine-tuned on the titles as text."""
  llm_dir, base = tiny_llm_base
  config = _config(llm_dir, mode="full", user="text20", llm_learning_rate=1e-2)
  config.input.max_text_len = 512
  workdir = _workdir(base, tmp_path_factory.mktemp("text20"))
  stages.run("align", config, workdir, log=QUIET)
  return workdir


def _leaves(tree):
  return [np.asarray(x, np.float32) for x in jax.tree.leaves(tree)]


def test_a_run_starts_from_another_runs_fine_tuned_llm_holds_it_and_exports_it(tiny_llm_base, text_run, tmp_path):
  llm_dir, base = tiny_llm_base
  workdir = _workdir(base, tmp_path / "run")
  lines = []
  result = stages.run("align", _config(llm_dir, mode="adapter", llm_from=text_run), workdir, log=lines.append)
  _, text_params, _ = align_export.load(os.path.join(text_run, "align", "export"))
  model, params, spec = align_export.load(os.path.join(workdir, "align", "export"))
  assert spec["saved"] == ["adapter", "llm"] and spec["align"]["mode"] == "adapter"
  for got, want in zip(_leaves(params["llm"]), _leaves(text_params["llm"]), strict=True):
    np.testing.assert_array_equal(got, want)  # held: the text run's LLM, unchanged
  _, base_llm = weights.load(llm_dir)
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(text_params["llm"]), _leaves(base_llm)))  # not llm.model's
  assert result["llm_from"] == {"workdir": text_run, "checksum": align_export.checksum(text_params["llm"])}
  assert atomic.read_json(os.path.join(workdir, "align", "llm_from.json")) == result["llm_from"]  # kept for a resume
  assert any(l.startswith(f"align: the LLM starts from {text_run}'s fine-tuned LLM") and "held" in l for l in lines)
  assert model.num_soft > 0  # this run reads soft tokens; the text run wrote titles


def test_an_export_without_a_fine_tuned_llm_or_from_another_llm_is_refused_by_name(text_run, tmp_path):
  spec = atomic.read_json(os.path.join(text_run, "align", "export", align_export.SPEC_FILE))
  expected = {}
  with pytest.raises(align_export.ExportError, match=r"align.llm_from='.*nowhere': .*align.json missing; run that "
                                                     r"workdir's align stage first"):
    align_export.fine_tuned_llm(str(tmp_path / "nowhere"), spec["llm"]["model"], expected)
  for name, change, message in (
      ("held", {"saved": ["adapter"], "align": {**spec["align"], "mode": "adapter"}},
       r"its Stage 2 did not fine-tune the LLM \(mode 'adapter'\)"),
      ("other", {"llm": {**spec["llm"], "model": "/somewhere/else"}},
       r"its LLM was fine-tuned from /somewhere/else, this run's llm.model is")):
    export = tmp_path / name / "align" / "export"
    export.mkdir(parents=True)
    (export / align_export.SPEC_FILE).write_text(json.dumps({**spec, **change}))
    with pytest.raises(align_export.ExportError, match=rf"align.llm_from='.*{name}': {message}"):
      align_export.fine_tuned_llm(str(tmp_path / name), spec["llm"]["model"], expected)


def test_a_resumed_run_whose_source_llm_changed_is_refused(tmp_path):
  from uqa_jax.stages import align  # pylint: disable=import-outside-toplevel
  align.same_llm_source({"workdir": "./workdir/text20/", "checksum": 1234.5}, str(tmp_path), 0)  # kept as typed
  source = {"workdir": "workdir/text20", "checksum": 1234.5}  # as build records it now: normalised
  align.same_llm_source(dict(source), str(tmp_path), 40)  # resumed, the same LLM
  with pytest.raises(align_export.ExportError, match=r"align.llm_from='workdir/text20': this run started from "
                                                     r"'workdir/text20''s LLM \(weights' sum of squares 1234.5\), "
                                                     r"which is now 1234.75: its Stage 2 changed since"):
    align.same_llm_source({**source, "checksum": 1234.75}, str(tmp_path), 40)


def test_a_source_on_other_data_is_refused_naming_the_differing_keys(text_run, tmp_path):
  from uqa_jax.stages import align  # pylint: disable=import-outside-toplevel
  own = _workdir(text_run, tmp_path / "own")  # this run's data: the source's
  align.same_data(text_run, own)
  data = atomic.read_json(os.path.join(own, "data", "fingerprint.json"))
  key = next(k for k in data if k.endswith(".seed") or k == "seed")
  atomic.write_json(os.path.join(own, "data", "fingerprint.json"), {**data, key: data[key] + 1})
  with pytest.raises(align_export.ExportError, match=rf"align.llm_from='.*': its data stage differs from this run's "
                                                     rf"\(.*own\) in {key} \({data[key]!r} there, {data[key] + 1!r} "
                                                     r"here\): its LLM may have trained on this run's eval questions"):
    align.same_data(text_run, own)
  os.remove(os.path.join(own, "data", "fingerprint.json"))
  with pytest.raises(align_export.ExportError, match=r"own/data/fingerprint.json is missing"):
    align.same_data(text_run, own)


def test_the_align_stage_refuses_a_source_on_other_data_before_it_reads_anything(tiny_llm_base, text_run, tmp_path):
  llm_dir, base = tiny_llm_base
  source = str(tmp_path / "source")
  shutil.copytree(text_run, source)
  data = atomic.read_json(os.path.join(source, "data", "fingerprint.json"))
  atomic.write_json(os.path.join(source, "data", "fingerprint.json"), {**data, "seed": data["seed"] + 1})
  workdir = _workdir(base, tmp_path / "run")
  os.remove(os.path.join(workdir, "pretrain", "export", "encoder.json"))  # nothing else is read first
  with pytest.raises(align_export.ExportError, match=r"its data stage differs from this run's .* in seed"):
    stages.run("align", _config(llm_dir, mode="adapter", llm_from=source), workdir, log=QUIET)


def test_the_source_path_is_fingerprinted_as_one_spelling(tiny_llm_base):
  from uqa_jax.stages import align  # pylint: disable=import-outside-toplevel
  llm_dir, _ = tiny_llm_base
  prints = [align.fingerprint(_config(llm_dir, mode="adapter", llm_from=p))["align"]["llm_from"]
            for p in ("workdir/text20", "./workdir/text20/", "workdir//text20")]
  assert prints == ["workdir/text20"] * 3


def test_a_damaged_align_export_is_named_by_file_when_loaded_and_when_its_llm_is_read(text_run, tmp_path):
  import re  # pylint: disable=import-outside-toplevel
  copy = str(tmp_path / "copy")
  shutil.copytree(text_run, copy)
  export = os.path.join(copy, "align", "export")
  spec = atomic.read_json(os.path.join(export, align_export.SPEC_FILE))
  params = os.path.join(export, align_export.PARAMS_DIR)
  victim = max((os.path.join(d, f) for d, _, fs in os.walk(params) for f in fs), key=os.path.getsize)
  with open(victim, "r+b") as fh:
    fh.truncate(os.path.getsize(victim) - 1)
  damaged = rf"{re.escape(params)}: damaged \({re.escape(victim)}: .* bytes, written with"
  with pytest.raises(align_export.ExportError, match=damaged):
    align_export.load(export)
  with pytest.raises(align_export.ExportError, match=rf"align.llm_from='{re.escape(copy)}': {damaged}.*: rerun that "
                                                     r"workdir's align stage or restore it"):
    align_export.fine_tuned_llm(copy, spec["llm"]["model"], {})
