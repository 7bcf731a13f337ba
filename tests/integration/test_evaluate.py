"""Stage 3 and the report, end to end on a hand-built LLM whose answers are known in advance.

The LLM (`_chain_llm`) has no attention or MLP output (both projections zero), so each
position's logits depend on its own token only: logits(t) = RMSNorm(E[t]) @ lm_head, a bigram
table we write by hand. After the assistant turn's last token ("\\n") it says "Yes", then "!",
then <|im_end|>: every greedy answer is known, two tokens long, ended by the end-of-turn token.
Its other rows are random, so the candidates' likelihoods differ and are computed here in NumPy.
"""

import collections
import json
import os
import re
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from uqa_jax import stages
from uqa_jax.config.recipes import EvaluateConfig
from uqa_jax.data import answers as answers_lib
from uqa_jax.data import arrow_io
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import pipeline
from uqa_jax.data import qa
from uqa_jax.data import schema
from uqa_jax.evaluation import diagnosis
from uqa_jax.evaluation import evaluator as evaluator_lib
from uqa_jax.evaluation import questions as questions_lib
from uqa_jax.evaluation import scoring
from uqa_jax.evaluation import tables
from uqa_jax.llm import model as llm_model
from uqa_jax.llm import weights
from uqa_jax.llm.config import LLMConfig
from uqa_jax.runtime import atomic
from uqa_jax.stages import evaluate
from uqa_jax.stages import report
from uqa_jax.tools import seeds
from tests.conftest import ROOT
from tests.conftest import tiny_llm_config

QUIET = lambda *_: None
D = 8  # LLM width
SCALE = 30.0  # how strongly the chain's next token wins


def _chain_llm(path, tokenizer):
  """-> (dir, bigram logits [V, V] as NumPy computes them, the chain's token ids)."""
  vocab = tokenizer.get_vocab()
  newline, yes, bang, end = tokenizer.encode("\n")[0], tokenizer.encode("Yes")[0], tokenizer.encode("!")[0], vocab["<|im_end|>"]
  v = len(tokenizer)
  cfg = LLMConfig(vocab_size=v, d_model=D, d_ff=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4,
                  rope_theta=1e4, rms_eps=1e-6, qkv_bias=True, tie_embeddings=False, eos_token_ids=(end,))
  ids = jnp.zeros((1, 2), jnp.int32)
  params = jax.device_get(nn.unbox(llm_model.Decoder(cfg).init(jax.random.PRNGKey(0), ids, positions=ids,
                                                                 kv_mask=jnp.ones((1, 2), jnp.int32))["params"]))
  rng = np.random.default_rng(0)
  slot = np.full(v, D - 1)  # each token's embedding is a one-hot row: the chain's own, the rest share one
  slot[[newline, yes, bang]] = [0, 1, 2]
  lm_head = rng.normal(size=(D, v)).astype(np.float32)
  for i, nxt in enumerate((yes, bang, end)):
    lm_head[i, nxt] += SCALE
  params["embedding"], params["lm_head"] = np.eye(D, dtype=np.float32)[slot], lm_head
  params["norm"]["scale"] = np.ones(D, np.float32)
  params["layers"]["attn"]["o_kernel"] = np.zeros_like(params["layers"]["attn"]["o_kernel"])  # no attention output
  params["layers"]["mlp"]["down_kernel"] = np.zeros_like(params["layers"]["mlp"]["down_kernel"])  # no MLP output
  weights.save_hf(str(path), cfg, params)
  tokenizer.save_pretrained(str(path))
  # RMSNorm of a one-hot row e_i is e_i / sqrt(1/D + eps): logits(t) = that times lm_head[slot[t]].
  return str(path), (lambda t: np.sqrt(D / (1 + 1e-6 * D)) * lm_head[slot[t]]), (yes, bang, end)


def chain_config(llm_dir: str):
  """The smoke config on the chain LLM, every stage, 28 questions (also a config file's body:
  tests/integration/test_kills.py runs it through `python -m uqa_jax.main`)."""
  config = smoke.get_config()
  config.stages = ("data", "pretrain", "align", "evaluate", "diagnose", "report")
  config.llm.model = llm_dir
  config.diagnose.probe.min_train = 5
  config.diagnose.bootstrap_samples = 50
  config.input.max_text_len = 96
  config.pretrain.steps = 3  # any trained encoder will do
  a = config.align
  a.mode, a.schedule, a.batch_size, a.steps, a.log_every, a.checkpoint_every = "adapter", "constant", 4, 2, 1, 2
  e = config.evaluate
  e.runs, e.max_questions, e.batch_size, e.max_new_tokens, e.bootstrap_samples = (
      ("aligned", "shuffled_user", "text20", "floor"), 28, 8, 6, 200)
  return config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tokenizer):
  """(config, workdir, logits_of, chain) after data -> pretrain -> align -> evaluate -> diagnose -> report."""
  llm_dir, logits_of, chain = _chain_llm(tmp_path_factory.mktemp("chain-llm"), tokenizer)
  config = chain_config(llm_dir)
  workdir = str(tmp_path_factory.mktemp("evaluate"))
  for stage in config.stages:
    stages.run(stage, config, workdir, log=QUIET)
  return config, workdir, logits_of, chain


def _log_softmax(logits):
  logits = logits.astype(np.float64)
  return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())


def _records(workdir, run):
  return scoring.read_jsonl(os.path.join(workdir, "evaluate", run, "predictions.jsonl"))


def _bigram_nll(chat, messages, prompt, answer, logits_of):
  """The answer's NLL per token after `prompt` under the hand-built bigram LLM, in NumPy."""
  ids = chat.answer_ids(messages, answer, prompt)
  prev = [prompt[-1]] + ids[:-1]
  return -np.mean([_log_softmax(logits_of(p))[t] for p, t in zip(prev, ids)])


def test_generation_decodes_several_tokens_and_stops_at_end_of_turn(evaluated, tokenizer):
  _, workdir, _, (yes, bang, _) = evaluated
  records = _records(workdir, "aligned")
  assert len(records) == 28
  # max_new_tokens is 6: the answers stop because <|im_end|> came, after two tokens.
  assert {r["prediction"] for r in records} == {tokenizer.decode([yes, bang])} == {"Yes!"}
  for r in records:
    assert set(r) >= {"question", "prediction", "answer", "task", "user", "prompt_tokens"}


def test_golds_longer_than_the_generation_budget_are_counted(evaluated, tokenizer):
  """max_new_tokens is 6: every gold of more tokens can never be generated; each run's result
  counts them per task (the tokenizer's own count of the written golds)."""
  _, workdir, _, _ = evaluated
  for run in ("aligned", "shuffled_user", "text20"):
    expected = collections.Counter(r["task"] for r in _records(workdir, run)
                                   if len(tokenizer.encode(r["answer"], add_special_tokens=False)) > 6)
    result = atomic.read_json(os.path.join(workdir, "evaluate", run, "result.json"))
    assert sum(expected.values()) > 0
    assert result["golds_longer_than_max_new_tokens"] == dict(expected), run


def test_ranked_prediction_is_the_candidate_a_numpy_bigram_prefers(evaluated, tokenizer):
  config, workdir, logits_of, _ = evaluated
  chat = chat_lib.ChatTokenizer(tokenizer, config.input.max_text_len)
  path = os.path.join(workdir, "data", "align_data_eval.arrow")
  f = arrow_io.SequenceFile(path)
  ranked = [r for r in _records(workdir, "aligned") if "ranked_prediction" in r]
  assert {r["task"] for r in ranked} == {"IP", "AP"}
  picks_not_first = 0
  for r in ranked:
    messages = json.loads(f.text(r["row"]))[:-1]
    prompt, _ = chat.prompt_ids(messages)
    cands = r["question"].split("Candidates: ")[1].split("; ")
    want = [_bigram_nll(chat, messages, prompt, c, logits_of) for c in cands]
    assert r["candidate_nll"] == pytest.approx(want, rel=1e-3, abs=1e-3)
    assert r["ranked_prediction"] == cands[int(np.argmin(want))]
    picks_not_first += r["ranked_prediction"] != cands[0]
  assert picks_not_first  # the pick follows the likelihoods, not the candidates' order


def test_ranked_all_ranks_every_subtask_on_one_candidate_set_as_a_numpy_bigram_does(evaluated, tokenizer):
  """Every run ranks the same candidates per question (the gold among them, IP/AP's listed
  ones), by the likelihoods NumPy computes; the train-prior floor picks by the train golds'
  counts; the scores carry chance and the report and verdict show the variant."""
  config, workdir, logits_of, _ = evaluated
  chat = chat_lib.ChatTokenizer(tokenizer, config.input.max_text_len)
  f = arrow_io.SequenceFile(os.path.join(workdir, "data", "align_data_eval.arrow"))
  sets = {}
  for run in ("aligned", "shuffled_user"):
    ranked = [r for r in _records(workdir, run) if "ranked_all_candidates" in r]
    assert {r["task"] for r in ranked} - {"IP", "AP"}, run  # open questions are ranked too
    for r in ranked:
      cands = r["ranked_all_candidates"]
      assert r["answer"] in cands and len(set(cands)) == len(cands) >= 2
      if r["task"] in ("IP", "AP"):
        assert cands == r["question"].split("Candidates: ")[1].split("; ")
      assert sets.setdefault((r["user"], r["question"]), cands) == cands  # one set for every run
      messages = json.loads(f.text(r["row"]))[:-1]
      prompt, _ = chat.prompt_ids(messages)
      want = [_bigram_nll(chat, messages, prompt, c, logits_of) for c in cands]
      assert r["ranked_all_nll"] == pytest.approx(want, rel=1e-3, abs=1e-3)
      assert r["ranked_all_prediction"] == cands[int(np.argmin(want))]
    score = atomic.read_json(os.path.join(workdir, "evaluate", run, "result.json"))["scores"]["ranked_all"]
    overall = score["cells"]["overall"]
    assert overall["n"] == len(ranked)
    assert overall["chance"] == pytest.approx(np.mean([1 / len(r["ranked_all_candidates"]) for r in ranked]))
  # the prior floor, by hand: each question's candidate most frequent among the train golds of its
  # template (the question with "quoted" values and numbers masked, a listed candidate set cut off;
  # a gold's form is a function of the gold, so the gold in the key keeps forms apart)
  template = lambda q: re.sub(r"\d+", "#", re.sub(r'"[^"]*"', '""', q.split("Candidates: ")[0]))
  t = arrow_io.SequenceFile(os.path.join(workdir, "data", "align_data_train.arrow"))
  train = collections.Counter()
  for row in range(len(t)):
    question, answer = (m["content"] for m in json.loads(t.text(row))[-2:])
    train[t.task(row), template(question), answer] += 1
  prior = _records(workdir, "floor_prior")
  assert len(prior) == len(sets) and all("prediction" not in r for r in prior)
  assert sum(train.values()) == len(t) and len({k[:2] for k in train}) > len({k[0] for k in train})  # templates split tasks
  for r in prior:
    key = (r["task"], template(r["question"]))
    assert r["ranked_all_prediction"] == sorted(r["ranked_all_candidates"], key=lambda c: (-train[key + (c,)], c))[0]
  md = open(os.path.join(workdir, "report", "report.md"), encoding="utf-8").read()
  assert "(`ranked_all`)" in md and "| floor: chance (1/K) |" in md and "| floor: train prior |" in md
  assert "verdict (ranked_all, every sub-task's candidates, paired bootstrap over users)" in md
  assert "the train prior" in md.split("verdict (ranked_all")[1]


def test_answer_nll_is_the_gold_likelihood_a_numpy_bigram_gives(evaluated, tokenizer):
  """Every question's `answer_nll` (not only those listing candidates), in both runs; this LLM
  ignores the soft tokens, so the report finds no gain of the own user's prompt at all."""
  config, workdir, logits_of, _ = evaluated
  chat = chat_lib.ChatTokenizer(tokenizer, config.input.max_text_len)
  f = arrow_io.SequenceFile(os.path.join(workdir, "data", "align_data_eval.arrow"))
  for run in ("aligned", "shuffled_user"):
    records = _records(workdir, run)
    assert {r["task"] for r in records} - {"IP", "AP"}  # open questions too
    for r in records:
      messages = json.loads(f.text(r["row"]))[:-1]
      prompt, _ = chat.prompt_ids(messages)
      want = _bigram_nll(chat, messages, prompt, r["answer"], logits_of)
      assert r["answer_nll"] == pytest.approx(want, rel=1e-3, abs=1e-3)
  gains = tables.nll_gains(tables.collect([workdir]), samples=100)
  assert len(gains) == 1 and gains[0]["cells"]["overall"]["gain"] == 0
  assert gains[0]["cells"]["overall"]["ci"] == [0.0, 0.0] and gains[0]["cells"]["overall"]["p_value"] == 1.0


def test_shuffled_user_never_gets_their_own_prompt(evaluated):
  _, workdir, _, _ = evaluated
  records = _records(workdir, "shuffled_user")
  users = {r["user"] for r in records}
  assert len(users) >= 3
  assert all(r["prompt_user"] != r["user"] for r in records)
  partner = {r["user"]: r["prompt_user"] for r in records}
  assert sorted(partner.values()) == sorted(partner)  # a permutation: each user's prompt is used once
  for seed in range(50):
    pairs = questions_lib.shuffled_partners([f"u{i}" for i in range(seed % 5 + 2)], seed)
    assert all(a != b for a, b in pairs.items()) and sorted(pairs.values()) == sorted(pairs)
  with pytest.raises(ValueError, match="at least 2 users"):
    questions_lib.shuffled_partners(["u0", "u0"], 0)


def test_text_baseline_writes_the_last_titles_into_the_prompt(evaluated, tokenizer):
  config, workdir, _, _ = evaluated
  ev = evaluator_lib.Evaluator(config, workdir, QUIET)
  prompts, messages = ev.text_prompts(20)
  source = pipeline.SequenceSource(ev.path)
  for q, prompt, chat in zip(ev.questions[:5], prompts, messages):
    titles = source[q.row][qa.TITLE_COLUMN]
    last = tokenizer.decode(titles.bag(titles.num_steps - 1).tolist())
    text = tokenizer.decode(prompt)
    assert f"{min(20, titles.num_steps)}. {last}\n\n{q.question}" in text and "\n1. " in text
  text_records, own = _records(workdir, "text20"), _records(workdir, "aligned")
  assert all(t["prompt_tokens"] > o["prompt_tokens"] for t, o in zip(text_records, own))


def test_scores_equal_the_score_command_on_the_written_file(evaluated):
  _, workdir, _, _ = evaluated
  for run in ("aligned", "floor_constant"):
    path = os.path.join(workdir, "evaluate", run, "predictions.jsonl")
    stored = atomic.read_json(os.path.join(workdir, "evaluate", run, "result.json"))["scores"]
    for variant in ("official", "strict"):
      out = subprocess.run([sys.executable, "-m", "uqa_jax.tools.score", path, "--json", "--variant", variant,
                            "--samples", "200"], capture_output=True, text=True, check=True).stdout
      assert json.loads(out)["score"]["cells"] == stored[variant]["cells"]


def test_floor_constant_is_chosen_on_the_train_golds(evaluated):
  _, workdir, _, _ = evaluated
  f = arrow_io.SequenceFile(os.path.join(workdir, "data", "align_data_train.arrow"))
  golds = {}
  for r in range(len(f)):
    golds.setdefault(f.task(r), []).append(json.loads(f.text(r))[-1]["content"])
  records = _records(workdir, "floor_constant")
  for rec in records:
    assert rec["prediction"] == answers_lib.best_constant(golds[rec["task"]])[0]
  # Chosen on the eval golds, some task's constant would differ: the test can tell the splits apart.
  eval_golds = {}
  for rec in records:
    eval_golds.setdefault(rec["task"], []).append(rec["answer"])
  assert any(answers_lib.best_constant(g)[0] != answers_lib.best_constant(golds[t])[0] for t, g in eval_golds.items())
  first = _records(workdir, "floor_first_candidate")
  assert first and all(r["task"] in ("IP", "AP") for r in first)


def test_report_is_written_from_stored_results_alone(evaluated, tmp_path):
  _, workdir, _, _ = evaluated
  shutil.copytree(os.path.join(workdir, "evaluate"), tmp_path / "evaluate")  # no data, no model
  lines = []
  report.write(str(tmp_path), samples=200, log=lines.append)
  md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
  for needle in ("Table 2", "shuffled_user", "floor: best constant", "text20", "Table 7", "trmpp"):
    assert needle in md
  assert (tmp_path / "report" / "accuracy_official.png").stat().st_size > 1000
  saved = json.loads((tmp_path / "report" / "report.json").read_text())
  assert any(c["other"] == "shuffled_user" and "p_value" in c for c in saved["comparisons"])
  # Against the first-candidate floor: on the questions it answers (IP, AP), not skipped.
  first = [c for c in saved["comparisons"] if c["other"] == "floor: first candidate" and c["variant"] == "official"]
  assert first and "p_value" in first[0] and first[0]["n"] == len(_records(workdir, "floor_first_candidate"))
  assert any("does not beat shuffled_user" in l or "BEATS shuffled_user" in l for l in lines)
  # the console's Table 2 under both rules, each row a run: official, then ranked_all with its chance row
  tables_of = {v: next(l for l in lines if l.startswith(f"report: Table 2 ({v}")) for v in ("official", "ranked_all")}
  assert "| trmpp | method |" in tables_of["official"] and "| trmpp | method |" in tables_of["ranked_all"]
  assert "| floor: chance (1/K) |" in tables_of["ranked_all"] and "chance" not in tables_of["official"]


def test_report_refuses_a_missing_or_damaged_run_by_name(evaluated, tmp_path):
  """A run the evaluate stage made but whose files are gone is an error naming it, never a
  report that shows it as not run (and a diagnosis that changes with it)."""
  _, workdir, _, _ = evaluated
  for case in ("run", "predictions", "truncated"):
    shutil.copytree(os.path.join(workdir, "evaluate"), tmp_path / case / "evaluate")
  shutil.rmtree(tmp_path / "run" / "evaluate" / "shuffled_user")
  with pytest.raises(FileNotFoundError, match="run 'shuffled_user' of .* is incomplete: .*shuffled_user/result.json"):
    report.write(str(tmp_path / "run"), figures=False, samples=50, log=QUIET)
  os.remove(tmp_path / "predictions" / "evaluate" / "floor_constant" / "predictions.jsonl")
  with pytest.raises(FileNotFoundError, match="floor_constant/predictions.jsonl is missing"):
    report.write(str(tmp_path / "predictions"), figures=False, samples=50, log=QUIET)
  result = tmp_path / "truncated" / "evaluate" / "aligned" / "result.json"
  result.write_text(result.read_text()[:100])
  with pytest.raises(ValueError, match=re.escape(str(result)) + ": not valid JSON"):
    report.write(str(tmp_path / "truncated"), figures=False, samples=50, log=QUIET)
  # through the main command: one line naming the run, no traceback, exit status 1
  config, copy = evaluated[0], tmp_path / "whole"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("run.lock"))
  shutil.rmtree(copy / "evaluate" / "shuffled_user")
  (tmp_path / "chain.py").write_text("from tests.integration import test_evaluate\n\n\ndef get_config():\n"
                                     f"  return test_evaluate.chain_config({config.llm.model!r})\n")
  out = subprocess.run([sys.executable, "-m", "uqa_jax.main", "--config", str(tmp_path / "chain.py"), "--workdir",
                        str(copy), "--config.stages=('report',)"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1].startswith(
      f"uqa-jax: [report] report: run 'shuffled_user' of {copy} is incomplete"), out.stderr[-2000:]


def test_a_finished_run_is_reused_and_bad_runs_are_rejected(evaluated):
  config, workdir, _, _ = evaluated
  lines = []
  evaluate.run(config, workdir, log=lines.append)
  assert any("reusing" in l for l in lines) and not any("generated" in l for l in lines)
  with pytest.raises(ValueError, match="list each run once"):
    EvaluateConfig(runs=("aligned", "oracle"))


@pytest.fixture(scope="module")
def tiny_base(tiny_llm_base):
  """(config, workdir with finished data and pretrain stages) on a random tiny LLM (attention on)."""
  llm_dir, workdir = tiny_llm_base
  config = tiny_llm_config(llm_dir)
  config.stages = ("data", "pretrain", "align", "evaluate")
  a = config.align
  a.mode, a.schedule, a.batch_size, a.steps, a.checkpoint_every = "full", "constant", 4, 2, 2
  e = config.evaluate
  e.runs, e.max_questions, e.batch_size, e.max_new_tokens, e.bootstrap_samples = ("aligned",), 14, 8, 3, 50
  e.prompt_cost = False
  return config, workdir


# `placeholder` in the default run (soft tokens inside the prompt); `prefix` is also covered by
# the bigram test above, so its run here is marked slow. `text20` (slow; its parts run by default
# in test_pipeline's history test and test_uqa_model's text-user test): no soft tokens, the
# history as text (evaluate's text prompts against the pipeline's `history_clicks`).
@pytest.mark.parametrize("place,user", [pytest.param("prefix", "encoder", marks=pytest.mark.slow),
                                        ("placeholder", "encoder"),
                                        pytest.param("prefix", "text20", marks=pytest.mark.slow)])
def test_ranked_nll_equals_stage2_answer_nll(place, user, tiny_base, tmp_path, tokenizer):
  """Stage 3 scores a candidate on a cached, left-padded prompt (soft tokens spliced in, or the
  history as text); Stage 2's loss path (right-padded, whole sequence, no cache) must agree."""
  from uqa_jax.soft_prompt import contrast
  from uqa_jax.soft_prompt import export as align_export
  from uqa_jax.soft_prompt import model as uqa_model
  config, base = tiny_base
  config = config.copy_and_resolve_references()
  config.align.place, config.align.user = place, user
  text_clicks = 20 if user == "text20" else 0
  config.evaluate.runs = ("aligned", "shuffled_user")
  if text_clicks:
    config.input.max_text_len = 512
  workdir = str(tmp_path)
  for stage in ("data", "pretrain"):
    shutil.copytree(os.path.join(base, stage), os.path.join(workdir, stage))
  for stage in ("align", "evaluate"):
    stages.run(stage, config, workdir, log=QUIET)
  model, params, _ = align_export.load(os.path.join(workdir, "align", "export"))
  source = pipeline.SequenceSource(os.path.join(workdir, "data", "align_data_eval.arrow"))
  n = config.input.max_text_len
  pipe = pipeline.InputConfig(max_len=config.data.max_len, bag_sizes=config.input.bag_sizes.to_dict(),
                                 max_text_len=n, max_answer_len=config.input.max_answer_len, history_clicks=text_clicks)
  mapper = pipeline.RowToArrays(pipe, source.path, chat_lib.ChatTokenizer(tokenizer, n), source.language)
  nll_fn = jax.jit(lambda p, b: uqa_model.answer_nll(p, b, model=model))
  ranked = [r for r in _records(workdir, "aligned") if "ranked_prediction" in r]
  assert ranked
  for r in ranked:
    row = source[r["row"]]
    chat = json.loads(row["text"])[:-1]
    want = []
    for cand in r["question"].split("Candidates: ")[1].split("; "):
      arrays = mapper.map({**row, "text": json.dumps(chat + [{"role": "assistant", "content": cand}])})
      del arrays["answer_at"]  # the reference path: logits at every position
      nll, count = nll_fn(params, {k: np.asarray(v)[None] for k, v in arrays.items()})
      want.append(float(nll[0] / count[0]))
    assert r["candidate_nll"] == pytest.approx(want, rel=1e-4, abs=2e-4)
  for r in _records(workdir, "aligned"):  # the gold's NLL, every question
    arrays = mapper.map(source[r["row"]])
    del arrays["answer_at"]
    nll, count = nll_fn(params, {k: np.asarray(v)[None] for k, v in arrays.items()})
    assert r["answer_nll"] == pytest.approx(float(nll[0] / count[0]), rel=1e-4, abs=2e-4)
  # shuffled_user: the own chat asked with the partner's history (its features for the encoder,
  # its titles for a text user): the partner's row with the own chat and task
  row_of = {q.user: q.row for q in questions_lib.load(source.path, pipe, tokenizer)[0]}
  own_nll = {r["row"]: r["answer_nll"] for r in _records(workdir, "aligned")}
  moved = 0
  for r in _records(workdir, "shuffled_user"):
    own = source[r["row"]]
    asked = {**source[row_of[r["prompt_user"]]], **{k: own[k] for k in ("text", schema.TASK_COLUMN) if k in own}}
    arrays = mapper.map(asked)
    if not text_clicks:  # only the history differs (a text user's titles are in its chat tokens)
      same = mapper.map(own)
      assert all(np.array_equal(arrays[k], same[k]) for k in same if k not in contrast.USER_INPUTS)
    del arrays["answer_at"]
    nll, count = nll_fn(params, {k: np.asarray(v)[None] for k, v in arrays.items()})
    assert r["answer_nll"] == pytest.approx(float(nll[0] / count[0]), rel=1e-4, abs=2e-4)
    moved += abs(r["answer_nll"] - own_nll[r["row"]]) > 1e-3
  assert moved > 0  # the user's history changes the likelihood here: the test can tell the prompts apart
  if text_clicks:
    result = atomic.read_json(os.path.join(workdir, "evaluate", "aligned", "result.json"))
    assert result["label"] == "text20 (text-aligned LLM)" and result["prompt_tokens_mean"] > 150
    shuffled = _records(workdir, "shuffled_user")
    assert all(r["prompt_user"] != r["user"] for r in shuffled)


def test_report_with_an_included_ablation_workdir(evaluated, tmp_path):
  """Two trained encoders (the second an input ablation in its own workdir): Table 3 appears,
  each gets its verdict line, and it is compared with the other's model, not its free controls."""
  _, workdir, _, _ = evaluated
  main, other = tmp_path / "main", tmp_path / "no_text"
  for d in (main, other):
    shutil.copytree(os.path.join(workdir, "evaluate"), d / "evaluate")
  path = other / "evaluate" / "aligned" / "result.json"
  result = json.loads(path.read_text())
  path.write_text(json.dumps({**result, "input_variant": "no_text", "label": "trmpp w/o text"}))
  lines = []
  saved = report.write(str(main), include=[str(other)], figures=False, samples=100, log=lines.append)
  md = (main / "report" / "report.md").read_text(encoding="utf-8")
  assert "Table 3 — input ablation" in md and "Table 4" not in md
  lines_of = lambda prefix: [l for l in saved["verdict"].splitlines() if l.startswith(prefix)]
  # one of each per trained encoder (the verdict once per variant: official and ranked_all)
  assert len(lines_of("verdict (official")) == 2 and len(lines_of("verdict (ranked_all")) == 2
  assert len(lines_of("verdict")) == 4 and len(lines_of("answer NLL")) == 2
  pairs = {(c["method"], c["other"], c["other_dir"].startswith(str(other)))
           for c in json.loads((main / "report" / "report.json").read_text())["comparisons"]}
  assert ("trmpp", "trmpp w/o text", True) in pairs
  assert ("trmpp", "shuffled_user", True) not in pairs and ("trmpp", "shuffled_user", False) in pairs


def test_report_refuses_an_included_model_over_other_questions(evaluated, tmp_path):
  """An included workdir whose aligned model answered other questions (another seed's data, a
  `max_questions` cut) is an error naming both runs, not a row of 'not comparable'."""
  _, workdir, _, _ = evaluated
  main, other = tmp_path / "main", tmp_path / "other-seed"
  for d in (main, other):
    shutil.copytree(os.path.join(workdir, "evaluate"), d / "evaluate")
  path = other / "evaluate" / "aligned" / "predictions.jsonl"
  path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # one question fewer
  with pytest.raises(ValueError, match=r"evaluate/aligned and .*other-seed/evaluate/aligned hold different "
                                       r"questions \(1 only in the first, 0 only in the second\)"):
    report.write(str(main), include=[str(other)], figures=False, samples=100, log=lambda _: None)


def test_report_diagnosis_names_the_data_the_encoder_and_the_reader(evaluated, tmp_path):
  """With the diagnose stage's results and an oracle-reader workdir included, the report puts
  the count ceiling, the probe, the trained model and the oracle side by side per sub-task and
  says where the information is lost. The chain LLM ignores every soft token: no gain anywhere."""
  _, workdir, _, _ = evaluated
  main, oracle = tmp_path / "main", tmp_path / "oracle"
  shutil.copytree(os.path.join(workdir, "evaluate"), main / "evaluate")
  shutil.copytree(os.path.join(workdir, "diagnose"), main / "diagnose")
  shutil.copytree(os.path.join(workdir, "evaluate"), oracle / "evaluate")
  path = oracle / "evaluate" / "aligned" / "result.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), **evaluator_lib.describe(_oracle_config(), "aligned")}))
  diagnosed = atomic.read_json(os.path.join(workdir, "diagnose", "result.json"))  # the stage's own result
  assert set(diagnosed["runs"]) == {"ceiling", "probe", "probe_majority", "probe_shuffled_labels"}
  assert diagnosed["runs"]["probe"]["questions"] == diagnosed["runs"]["probe_majority"]["questions"] > 0
  assert os.path.exists(os.path.join(workdir, "diagnose", "probe", "predictions.jsonl"))
  lines = []
  report.write(str(main), include=[str(oracle)], figures=False, samples=100, log=lines.append)
  md = (main / "report" / "report.md").read_text(encoding="utf-8")
  table = md[md.index("## Where user information is lost"):].splitlines()
  header = next(l for l in table if l.startswith("| task |"))
  for column in ("count ceiling", "encoder probe", "majority answer", "floor: constant", "floor: first candidate",
                 "trained", "shuffled_user", "oracle reader", "NLL gain, oracle reader", "answers changed, trained"):
    assert f"| {column} |" in header, column
  oracle_label = evaluator_lib.describe(_oracle_config(), "aligned")["label"]
  assert f"| shuffled_user of {oracle_label} | control |" in md  # the included workdir's own control, named
  assert md.count("| shuffled_user | control |") == 4  # once per table: official, strict, ranked, ranked_all
  si = next(l for l in table if l.startswith("| SI |"))
  assert si.split(" | ")[1].startswith("100.0")  # the count ceiling
  said = next(l for l in lines if l.startswith("report: diagnosis:"))
  assert "Data: counting the visible clicks answers" in said and "Encoder: a linear probe" in said
  assert "the LLM does not use the user's tokens" in said and "does not carry user information" in said
  assert "the shuffled user's prompt changes 0 of " in said  # the chain LLM reads no soft token
  # The first failing link: the chain LLM reads no soft token, so the reader fails unless the
  # encoder (probe vs majority on the smoke data) already did.
  c = diagnosed["probe_vs_majority"]
  first = "reader" if c["ci"][0] > 0 and c["p_value"] < 0.05 else "encoder"
  assert f"Lost at: {first}" in said


@pytest.mark.parametrize("holds, expected", [
    ({"data": True, "text": True, "encoder": True, "reader": True, "adapter": True, "answers": False}, "Lost at: answers:"),
    ({"data": True, "text": True, "encoder": False, "reader": False, "adapter": False, "answers": False},
     "Lost at: encoder:"),
    ({"data": True, "text": False, "encoder": True}, "Lost at: text:"),
    ({"data": True, "text": False, "encoder": True, "reader": False}, "Lost at: text:"),
    # text bounds the soft prompts' levels: failing while one of them holds, it is passed over, and said
    ({"data": True, "text": False, "encoder": True, "reader": True, "adapter": True, "answers": False},
     "Lost at: answers: the own user's soft prompt makes the gold more likely"),
    ({"data": True, "text": False, "encoder": True, "reader": False, "adapter": True},
     "Lost at: reader:"),
    ({"data": False, "encoder": True}, "Lost at: data:"),
    ({"encoder": True, "reader": False}, "Lost at: reader (not measured before it: data, text):"),
    ({"data": True, "text": True, "encoder": True, "adapter": True, "answers": False},
     "Lost at: answers (not measured before it: reader):"),
    ({"data": True, "text": True, "encoder": True, "reader": True, "adapter": True},
     "Not lost at any measured level (not measured: answers)"),
    ({name: True for name, _ in diagnosis.LEVELS}, "Not lost: the trained encoder's answers beat shuffled_user"),
    ({}, "Not lost at any measured level (not measured: data, text, encoder, reader, adapter, answers)"),
])
def test_lost_at_names_the_first_measured_link_that_fails(holds, expected):
  said = diagnosis.lost_at(holds)
  assert said.startswith(expected), said
  passed = holds.get("text") is False and any(holds.get(n) for n in ("reader", "adapter", "answers"))
  assert ("(text fails although" in said) == passed, said


def _oracle_config():
  config = smoke.get_config()
  config.align.user = "oracle_titles"
  return config


def test_seeds_joins_the_reports_of_two_seeds(evaluated, tmp_path):
  """`python -m uqa_jax.tools.seeds` on two workdirs' reports: every run in both seeds with each value,
  the ceiling and probe rows from diagnose, comparisons and NLL gains per seed, one verdict per control."""
  _, workdir, _, _ = evaluated
  dirs = [tmp_path / f"main-s{i}" for i in (0, 1)]
  for i, d in enumerate(dirs):
    for stage in ("evaluate", "diagnose"):
      shutil.copytree(os.path.join(workdir, stage), d / stage)
    for path in (d / "evaluate").glob("*/result.json"):  # the same runs, recorded as seed i
      path.write_text(json.dumps({**json.loads(path.read_text()), "seed": i}))
    report.write(str(d), figures=False, samples=100, log=lambda _: None)
  out = tmp_path / "seeds.md"
  assert seeds.main([str(d) for d in dirs] + ["--out", str(out)]) == 0
  md = out.read_text(encoding="utf-8")
  saved = json.loads((dirs[0] / "report" / "report.json").read_text())
  trained = next(r for r in saved["results"] if r["kind"] == "method")
  acc = 100 * trained["scores"]["official"]["cells"]["overall"]["accuracy"]
  row = next(l for l in md.splitlines() if l.startswith(f"| {trained['label']} | method |"))
  assert row.rstrip(" |").endswith(f"{acc:.1f} ({acc:.1f} / {acc:.1f})")
  for needle in ("| shuffled_user | control |", "| count ceiling | diagnose |", "| encoder probe | diagnose |",
                 "| floor: best constant | floor |", "| text20 |", f"| {trained['label']} | shuffled_user | official |",
                 f"| {trained['label']} | overall |", "shuffled_user (official, overall): differences",
                 "| probe, shuffled labels | diagnose |", f"- {dirs[1]} (seed 1): {saved['diagnosis']}",
                 "## Table 2 — ranked_all", "floor: train prior (ranked_all, overall): differences",
                 "(beat shuffled_user and zeros and floor: train prior, ranked_all,"):
    assert needle in md, needle
  assert "Lost at: " in saved["diagnosis"]
  with pytest.raises(FileNotFoundError, match="main-s2"):
    seeds.write([str(dirs[0]), str(tmp_path / "main-s2")])


def test_stage3_compiles_once_per_shape(evaluated):
  """Every run (aligned, shuffled_user, text20 on the same LLM, the floors) and Table 7 share the
  generator's executables: the encoder's soft tokens, one prefill per prompt bucket, one decode
  loop, one candidate scorer per answer bucket, and one ahead-of-time prefill for text50's
  timing (longer than any bucket), whatever the number of questions and of their lengths."""
  config, workdir, _, _ = evaluated
  questions = [r for r in _records(workdir, "aligned")] + _records(workdir, "text20")
  assert len({r["prompt_tokens"] for r in questions}) >= 8  # many lengths, few shapes
  result = atomic.read_json(os.path.join(workdir, "evaluate", "result.json"))
  compiled, shapes = result["compile"], result["shapes"]["aligned"]
  assert len(shapes["buckets"]) == config.evaluate.prompt_buckets == 2 and 1 <= len(shapes["answer_buckets"]) <= 2
  assert compiled["executables"] == 1 + 2 + 1 + len(shapes["answer_buckets"]) + 1, (compiled, shapes)


def test_stage3_compiles_as_many_for_half_the_questions(evaluated, tmp_path):
  """The same stage on the first 14 of the 28 questions: the same count of executables (its
  buckets fitted to its own prompts), not one per batch or per length."""
  config, workdir, _, _ = evaluated
  for stage in ("data", "pretrain", "align"):
    shutil.copytree(os.path.join(workdir, stage), tmp_path / stage)
  half = config.copy_and_resolve_references()
  half.evaluate.max_questions = 14
  result = stages.run("evaluate", half, str(tmp_path), log=QUIET)
  shapes = result["shapes"]["aligned"]
  assert len(_records(str(tmp_path), "aligned")) == 14
  assert result["compile"]["executables"] == 1 + 2 + 1 + len(shapes["answer_buckets"]) + 1, result
