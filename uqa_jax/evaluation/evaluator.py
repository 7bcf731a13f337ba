"""Stage 3's evaluator: the aligned model asks every align-eval question; the runs it can make.

`Evaluator(config, workdir)` loads the aligned model (`workdir/align/export`, every tensor and
both sources checked), checks the questions (candidates, answer lengths against
`evaluate.max_new_tokens`), computes each user's soft tokens once, and answers a run's
questions (`run(name)`): whole answers decoded greedily with the KV cache, in batches of prompts
sorted by length; with `ranked`, each listed candidate's likelihood; with `ranked_all`, the
likelihood of every candidate of the question's set (`candidates.py`: drawn once, stored with
each record); with `answer_nll`, the gold answer's NLL per token. `cost()` times Table 7's prefills; `floor(run)` answers with the floors.
What each run is: `uqa_jax/stages/evaluate.py`.
"""

import collections
import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from uqa_jax.config import blocks
from uqa_jax.config import choices
from uqa_jax.config.recipes import AlignConfig
from uqa_jax.config.recipes import EvaluateConfig
from uqa_jax.data import answers as answers_lib
from uqa_jax.data import arrow_io
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import pipeline
from uqa_jax.data import qa
from uqa_jax.data import schema
from uqa_jax.data.config import DataConfig
from uqa_jax.evaluation import candidates as candidates_lib
from uqa_jax.evaluation import questions as questions_lib
from uqa_jax.evaluation import scoring
from uqa_jax.evaluation import tables
from uqa_jax.llm import generate
from uqa_jax.llm import tokenizer as tokenizer_lib
from uqa_jax.runtime import workdir as workdir_lib
from uqa_jax.soft_prompt import export as align_export

TEXT_CLICKS = choices.TEXT_CLICKS
FLOOR_RUNS = ("floor_constant", "floor_first_candidate")
PRIOR_FLOOR = tables.PRIOR_RUN  # ranked_all: the candidate most frequent among the align-train golds
ANSWER_BUCKETS = 2  # continuation slot lengths the likelihood passes compile (fitted to the batches)


def floor_runs(e: EvaluateConfig) -> tuple[str, ...]:
  return FLOOR_RUNS + ((PRIOR_FLOOR,) if e.ranked_all else ())


def run_names(e: EvaluateConfig) -> list[str]:
  """The result directories the config's runs write (`floor` writes two, three with `ranked_all`)."""
  return [n for r in e.runs for n in (floor_runs(e) if r == "floor" else (r,))]


def recipe_suffix(a: AlignConfig, train_questions: int = 1) -> str:
  """What a run's alignment adds to the default recipe, for its label: " + reconstruction" etc."""
  parts = [name for on, name in ((a.llm_from, f"LLM from {os.path.basename(os.path.normpath(a.llm_from))}"),
                                 (a.reconstructs(), "reconstruction"), (a.contrast_weight, "contrast"),
                                 (a.llm_steps, f"LLM frozen after {a.llm_steps} steps"),
                                 (train_questions > 1, f"{train_questions} question rounds")) if on]
  return " + " + ", ".join(parts) if parts else ""


def describe(config, run: str) -> dict:
  """What a run is, for the report: its label, kind, and the settings its tables group by."""
  user = config.align.user
  if run == "aligned" and user in TEXT_CLICKS:
    label, kind = f"{user} (text-aligned LLM)", "baseline"
  elif run == "aligned" and user == "encoder":
    label, kind = config.encoder.name, "method"
    label += {"full": "", "no_text": " w/o text", "no_side": " w/o side info"}[config.encoder.input_variant]
    label += "" if config.pretrain.loss == "sl" else f" ({config.pretrain.loss.upper()} loss)"
  elif run == "aligned" and user == choices.ORACLE:
    label, kind = "oracle reader (titles' LLM embeddings)", "diagnostic"
  elif run == "aligned":
    label, kind = user, "control"
  elif run == "shuffled_user":
    label, kind = "shuffled_user", "control"
  elif run in TEXT_CLICKS:
    label, kind = run + ("" if blocks.read(config, EvaluateConfig).text_llm == "base" else " (soft-prompt-aligned LLM)"), "baseline"
  else:
    label, kind = {"floor_constant": "floor: best constant", "floor_first_candidate": "floor: first candidate",
                   PRIOR_FLOOR: "floor: train prior"}[run], "floor"
  if run == "aligned" and kind in ("method", "control"):
    label += recipe_suffix(blocks.read(config, AlignConfig), blocks.read(config, DataConfig).train_questions)
  return {"run": run, "label": label, "kind": kind, "encoder": config.encoder.name,
          "input_variant": config.encoder.input_variant, "pretrain_loss": config.pretrain.loss,
          "adapter": config.adapter.name, "align_mode": config.align.mode, "align_user": user,
          "llm": config.llm.model, "seed": config.seed}


class Evaluator:
  """The aligned model, its tokenizer and generators, and the eval questions with their soft tokens."""

  def __init__(self, config, workdir: str, log=print):
    self.e = blocks.read(config, EvaluateConfig)
    self.log = log
    self.seed = config.seed
    export = os.path.join(workdir, "align", "export")
    self.model, params, self.spec = align_export.load(export)
    self.llm_source = self.spec["llm"]["model"]
    self.tokenizer = tokenizer_lib.load_tokenizer(self.llm_source)
    self.data_dir = workdir_lib.data_dir(workdir)
    self.path = os.path.join(self.data_dir, schema.file_name("align", "eval"))
    d = blocks.read(config, DataConfig)
    pipe = blocks.read(config, pipeline.InputConfig).for_run(batch_size=self.e.batch_size, max_len=d.max_len,
                                                    system_prompt=self.spec["align"]["system_prompt"])
    self.chat = chat_lib.ChatTokenizer(self.tokenizer, pipe.max_text_len, pipe.system_prompt, pipe.max_answer_len)
    start = time.time()
    self.questions, histories, self.language = questions_lib.load(self.path, pipe, self.tokenizer, self.e.max_questions)
    self._check_candidates()
    self._check_answer_lengths()
    self.candidate_sets = {}  # row -> the question's ranked_all candidates (() when not scored)
    if self.e.ranked_all:
      drawn = candidates_lib.draw(self.questions, self.e.candidates, config.seed)
      self.candidate_sets = {q.row: c for q, c in zip(self.questions, drawn)}
      got = candidates_lib.summary(drawn, self.e.candidates)
      log(f"evaluate: ranked_all: {got['questions'] - got['not_scored']} questions with up to {got['k']} candidates "
          f"(the gold and other users' golds of its template and form, drawn by frequency); {got['fewer_than_k']} "
          f"with fewer (at least {got['min']}); {got['not_scored']} not scored (no other user's gold of their "
          "template and form)")
    self.text_user = TEXT_CLICKS.get(self.spec["align"]["user"], 0)  # aligned with the history as text
    self.user_row = {}
    for q in self.questions:
      self.user_row.setdefault(q.user, q.row)
    self.place = self.spec["align"]["place"]
    if self.text_user:
      self.soft = {}
      log(f"evaluate: {len(self.questions)} questions of {len(self.user_row)} users from {self.path}; "
          f"the LLM was aligned with the last {self.text_user} titles as text (no soft tokens)")
    else:
      self.soft = questions_lib.soft_tokens(self.model, params, histories, self.e.batch_size)
      log(f"evaluate: {len(self.questions)} questions of {len(self.soft)} users from {self.path}; "
          f"{self.model.adapter.cfg.name} adapter, {self.model.num_soft} soft tokens ({self.place}), "
          f"computed in {time.time() - start:.1f}s")
    self._texts = {}
    self.answer_lengths = self._answer_lengths()
    eos = generate.eos_ids_for(self.model.llm.cfg, self.tokenizer)
    pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
    self.separate_base = "llm" in self.spec["saved"]  # full fine-tuning: the text baselines' LLM is another
    make = lambda p, shapes: generate.Generator(self.model.llm.cfg, jax.tree.map(jnp.asarray, p), eos_ids=eos,
                                                pad_id=pad, shapes=shapes)
    self.aligned_llm = make(params["llm"], self._shapes("aligned"))
    self._make, self._base_llm = make, None if self.separate_base else self.aligned_llm

  def _base(self):
    """The LLM before alignment (the zero-shot text baselines), loaded once."""
    if self._base_llm is None:
      self._base_llm = self._make(align_export.load_llm(self.spec)[1], self._shapes("base"))
    return self._base_llm

  # --- shapes: compiled once -------------------------------------------------------------
  def _answer_lengths(self) -> list[int]:
    """The longest scored option (answer tokens and its end-of-turn token) of each batch the
    `aligned` run makes: what the continuation slots are fitted to (`ANSWER_BUCKETS` of them)."""
    if not (self.e.ranked or self.e.ranked_all or self.e.answer_nll):
      return []
    longest = [max(len(self.chat.answer_ids(q.messages, c, q.prompt, f"{self.path}, row {q.row}"))
                   for c in self._options(q)) if self._scored(q) else 0 for q in self.questions]
    batches = self._batches(range(len(self.questions)), [q.prompt for q in self.questions])
    return [max(longest[i] for i in idx) for idx, _ in batches if max(longest[i] for i in idx)]

  def shapes(self) -> dict:
    """{llm: its generator's fixed shapes} for the LLMs asked so far (the stage's result)."""
    gens = {"aligned": self.aligned_llm, **({"base": self._base_llm} if self.separate_base and self._base_llm else {})}
    return {k: {**dataclasses.asdict(g.shapes), "cache_len": g.shapes.cache_len} for k, g in gens.items() if g.shapes}

  def _prompt_lengths(self, llm: str) -> list[int]:
    """Prompt lengths (soft tokens included) of every question the runs ask `llm` ("aligned" or
    "base"; one pool when the base LLM is the aligned one)."""
    lengths = []
    for run in self.e.runs:
      if run in ("aligned", "shuffled_user") and (llm == "aligned" or not self.separate_base):
        if self.text_user:
          self.check_text_tokenizer()
          lengths += map(len, self.text_prompts(self.text_user, self.prompt_users(run))[0])
        else:
          lengths += [len(q.prompt) + self.model.num_soft for q in self.questions]
      elif run in TEXT_CLICKS:
        on = "base" if self.e.text_llm == "base" and self.separate_base else "aligned"
        if on == llm or not self.separate_base:
          self.check_text_tokenizer()
          lengths += map(len, self.text_prompts(TEXT_CLICKS[run])[0])
    return lengths

  def _shapes(self, llm: str) -> generate.Shapes | None:
    """The fixed shapes of `llm`'s generator: `evaluate.prompt_buckets` buckets fitted to every
    prompt its runs ask; None when no run asks it (Table 7's timings alone)."""
    lengths = self._prompt_lengths(llm)
    if not lengths:
      return None
    shapes = generate.Shapes.fit(lengths, self.e.prompt_buckets, self.e.max_new_tokens, self.answer_lengths,
                                 ANSWER_BUCKETS)
    self.log(f"evaluate: the {llm} LLM's prompts padded to {len(shapes.buckets)} length buckets {shapes.buckets}, "
             f"answers scored in {len(shapes.answer_buckets)} slot buckets {shapes.answer_buckets}, a "
             f"{shapes.cache_len}-slot KV cache: one prefill per prompt bucket, one candidate scorer per answer "
             f"bucket, one decode loop ({self.e.max_new_tokens} new tokens), at batch {self.e.batch_size}")
    return shapes

  def _check_candidates(self) -> None:
    """A listed candidate set must hold the gold; IP/AP questions that list none are counted."""
    for q in self.questions:
      if q.candidates and q.answer not in q.candidates:
        raise ValueError(f"{self.path}, row {q.row}: the gold {q.answer!r} is not among the question's "
                         f"candidates {list(q.candidates)}")
    unlisted = [q for q in self.questions if q.task in ("IP", "AP") and not q.candidates]
    listed = sum(1 for q in self.questions if q.candidates)
    if unlisted:
      self.log(f"evaluate: WARNING {len(unlisted)} IP/AP questions list no candidates after the marker "
               f"{qa.CANDIDATE_MARKERS[self.language]!r} (first: row {unlisted[0].row}); the ranked variant "
               f"covers the {listed} questions that do")

  def _check_answer_lengths(self) -> None:
    """Golds longer than `max_new_tokens` tokens can never be generated: counted per task, logged
    with the longest, and stored in every run's result (`golds_longer_than_max_new_tokens`)."""
    lengths = [len(self.tokenizer.encode(q.answer, add_special_tokens=False)) for q in self.questions]
    long = [(n, q) for n, q in zip(lengths, self.questions) if n > self.e.max_new_tokens]
    self.unreachable = dict(sorted(collections.Counter(q.task for _, q in long).items()))
    if long:
      n, q = max(long, key=lambda x: x[0])
      self.log(f"evaluate: WARNING {len(long)} of {len(self.questions)} gold answers are longer than "
               f"evaluate.max_new_tokens={self.e.max_new_tokens} tokens, so no generated answer can match them "
               f"({', '.join(f'{t} {c}' for t, c in self.unreachable.items())}; longest: row {q.row}, {q.task}, "
               f"{n} tokens); raise evaluate.max_new_tokens to at least {n} to give every question a chance")

  # --- what each run asks ------------------------------------------------------------
  def prompt_users(self, run: str) -> list[str]:
    """Whose history each question is asked with: its own, or (shuffled_user) another user's."""
    if run == "aligned":
      return [q.user for q in self.questions]
    partner = questions_lib.shuffled_partners([q.user for q in self.questions], self.seed)
    return [partner[q.user] for q in self.questions]

  def soft_prompt(self, users: list[str]):
    """(soft tokens per question [N, K, M], splice index per question) from the given users' histories."""
    soft = np.stack([self.soft[u] for u in users])
    at = [q.question_at if self.place == "placeholder" else 0 for q in self.questions]
    return soft, at

  def text_prompts(self, clicks: int, users: list[str] | None = None):
    """(prompt ids, chat messages) per question with the last `clicks` titles of its own
    history (or of `users[i]`'s) written above it; computed once per (clicks, users)."""
    key = (clicks, None if users is None else tuple(users))
    if key not in self._texts:
      self._texts[key] = self._text_prompts(clicks, users)
    return self._texts[key]

  def _text_prompts(self, clicks: int, users: list[str] | None):
    source = pipeline.SequenceSource(self.path)
    prompts, messages = [], []
    for i, q in enumerate(self.questions):
      row = source[q.row if users is None else self.user_row[users[i]]]
      chat = qa.with_history(q.messages, qa.history_text(row, clicks, self.tokenizer, self.language))
      prompts.append(self.chat.prompt_ids(chat, f"{self.path}, row {q.row}")[0])
      messages.append(chat)
    return prompts, messages

  def check_text_tokenizer(self) -> None:
    questions_lib.check_title_tokenizer(self.data_dir, self.llm_source, self.log)

  # --- asking ------------------------------------------------------------------------
  def _batches(self, indices, prompts):
    """Batches of question indices sorted by prompt length, each padded to `batch_size` by
    repeating its last question: one shape per prompt bucket, one compilation each."""
    order = sorted(indices, key=lambda i: len(prompts[i]))
    size = self.e.batch_size
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    return [(idx, idx + [idx[-1]] * (size - len(idx))) for idx in chunks]

  def _progress(self, run, what, done, total, start):
    elapsed = time.time() - start
    self.log(f"evaluate[{run}]: {what} {done}/{total} questions, {done / elapsed:.2f} questions/s, "
             f"ETA {elapsed / done * (total - done):.0f}s")

  def ask(self, run: str, gen, prompts, messages, soft=None, soft_at=None) -> tuple[list[dict], float]:
    """Generate (and rank) every question -> (records in question order, prefill s per question).

    Each batch is prefilled once: its scored options' likelihoods are read on that cache, then
    the answers are decoded from it."""
    e, n = self.e, len(self.questions)
    pick = lambda idx: (None if soft is None else soft[idx], None if soft_at is None else [soft_at[i] for i in idx])
    predictions, likely = [None] * n, [None] * n
    sampling = generate.SamplingConfig(max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                                       top_p=e.top_p, seed=self.seed)
    scores = lambda i: self._scored(self.questions[i])
    batches, start = self._batches(range(n), prompts), time.time()
    for b, (idx, full) in enumerate(batches):
      soft_b, at_b = pick(full)
      state = gen.prefill([prompts[i] for i in full], soft_b, at_b, new_tokens=e.max_new_tokens)
      if any(scores(i) for i in idx):
        self._likelihoods(gen, state, full, prompts, messages, scores, likely)
      out = gen.decode(state, sampling)
      for i, ids in zip(idx, out):
        stop = next((k for k, x in enumerate(ids) if x in gen.eos_ids), len(ids))
        predictions[i] = self.tokenizer.decode(ids[:stop].tolist(), skip_special_tokens=True)
      if (b + 1) % e.log_every == 0 or b + 1 == len(batches):
        self._progress(run, "answered", sum(len(x) for x, _ in batches[:b + 1]), n, start)
    # Prefill time (Table 7) on the first batch: its shape is compiled by now.
    first = batches[0][1]
    prefill_s = gen.prefill_seconds([prompts[i] for i in first], *pick(first)) / len(first)
    k = 0 if soft is None else soft.shape[1]
    records = []
    for i, q in enumerate(self.questions):
      record = {"question": q.question, "prediction": predictions[i], "answer": q.answer, "task": q.task,
                "user": q.user, "row": q.row, "prompt_tokens": len(prompts[i]) + k}
      if likely[i]:
        record.update(likely[i])
      records.append(record)
    return records, prefill_s

  def _scored(self, q) -> bool:
    """Whether a question's options get likelihoods: every question with `answer_nll`, those
    listing candidates with `ranked`, those with a candidate set with `ranked_all`."""
    return bool(self.e.answer_nll or (self.e.ranked and q.candidates) or self.candidate_sets.get(q.row))

  def _options(self, q) -> tuple[str, ...]:
    """The answers whose likelihood is scored: the question's ranked_all set (which holds the
    gold, and is the listed candidates where a question lists them), else the listed candidates
    (ranked; the gold is one of them), else the gold alone (`answer_nll`)."""
    if self.candidate_sets.get(q.row):
      return self.candidate_sets[q.row]
    return q.candidates if self.e.ranked and q.candidates else (q.answer,)

  def _likelihoods(self, gen, state, full, prompts, messages, scores, out) -> None:
    """Each option's NLL per answer token after the prompt, on the batch's prefilled cache; the
    lowest among listed candidates is the ranked prediction, the gold's is `answer_nll`. Rows
    `scores` leaves out (and the batch's repeated padding rows) get no record."""
    conts = []
    for i in full:
      q = self.questions[i]
      conts.append([self.chat.answer_ids(messages[i], c, prompts[i], f"{self.path}, row {q.row}")
                    for c in self._options(q)] if scores(i) else [])
    nlls = gen.continuation_nll([prompts[i] for i in full], conts, state=state)
    for i, per_option in zip(full, nlls):
      if not per_option or out[i] is not None:
        continue
      q, options = self.questions[i], self._options(self.questions[i])
      nll = dict(zip(options, (s / c for s, c in per_option)))
      out[i] = {}
      if self.e.answer_nll:
        out[i]["answer_nll"] = round(nll[q.answer], 5)
      if self.e.ranked and q.candidates:
        listed = [nll[c] for c in q.candidates]
        out[i].update(ranked_prediction=q.candidates[int(np.argmin(listed))], candidate_nll=[round(x, 4) for x in listed])
      if self.candidate_sets.get(q.row):
        scored = [nll[c] for c in options]
        out[i].update(ranked_all_candidates=list(options), ranked_all_prediction=candidates_lib.most_likely(nll),
                      ranked_all_nll=[round(x, 4) for x in scored])

  # --- the runs ----------------------------------------------------------------------
  def run(self, run: str) -> tuple[list[dict], dict]:
    """-> (records, cost {prefill_s_per_question})."""
    messages = [q.messages for q in self.questions]
    if run in ("aligned", "shuffled_user"):
      users = self.prompt_users(run)
      own = sum(u == q.user for u, q in zip(users, self.questions))
      if run == "shuffled_user" and own:
        raise RuntimeError(f"shuffled_user: {own} questions got their own user's prompt")
      if self.text_user:  # the history is in the prompt as text; the LLM was aligned that way
        self.check_text_tokenizer()
        prompts, messages = self.text_prompts(self.text_user, users)
        records, prefill_s = self.ask(run, self.aligned_llm, prompts, messages)
      else:
        soft, at = self.soft_prompt(users)
        records, prefill_s = self.ask(run, self.aligned_llm, [q.prompt for q in self.questions], messages, soft, at)
      if run == "shuffled_user":
        for r, u in zip(records, users):
          r["prompt_user"] = u
      return records, {"prefill_s_per_question": prefill_s}
    if run in TEXT_CLICKS:
      self.check_text_tokenizer()
      gen = self._base() if self.e.text_llm == "base" else self.aligned_llm
      prompts, messages = self.text_prompts(TEXT_CLICKS[run])
      records, prefill_s = self.ask(run, gen, prompts, messages)
      return records, {"prefill_s_per_question": prefill_s}
    return self.floor(run), {}

  def cost(self) -> dict:
    """Table 7: prompt tokens per question (all questions) and prefill seconds per question
    (one warm batch of `evaluate.batch_size` questions, the runs' batch, so the soft prompt's
    timing reuses their prefill) for the soft prompt and for text20/text50."""
    m = self.e.batch_size
    rows = [i % len(self.questions) for i in range(m)]  # the first batch, repeated when there are fewer
    out = {}
    if not self.text_user:
      soft, at = self.soft_prompt(self.prompt_users("aligned"))
      prompts = [q.prompt for q in self.questions]
      seconds = self.aligned_llm.prefill_seconds([prompts[i] for i in rows], soft[rows], [at[i] for i in rows],
                                                 own_bucket=True)
      out["embedding"] = {"prompt_tokens_mean": float(np.mean([len(p) for p in prompts]) + soft.shape[1]),
                          "prefill_s_per_question": seconds / m}
    try:
      self.check_text_tokenizer()
    except ValueError as e:
      self.log(f"evaluate: WARNING Table 7 without text20/text50: {e}")
      return {**out, **{run: {"skipped": str(e)} for run in TEXT_CLICKS}}
    gen = self._base() if self.e.text_llm == "base" else self.aligned_llm
    for run, clicks in TEXT_CLICKS.items():
      prompts, _ = self.text_prompts(clicks)
      out[run] = {"prompt_tokens_mean": float(np.mean([len(p) for p in prompts])),
                  "prefill_s_per_question": gen.prefill_seconds([prompts[i] for i in rows], own_bucket=True) / m}
    self.log("evaluate: prompt cost (Table 7): " + "; ".join(
        f"{k} {v['prompt_tokens_mean']:.0f} tokens, {1000 * v['prefill_s_per_question']:.0f} ms prefill per question"
        for k, v in out.items() if "skipped" not in v))
    return out

  @functools.cached_property
  def train_golds(self) -> list[tuple[str, str, str]]:
    """(task, question, gold answer) of every align-train row (read once: both train floors use them)."""
    path = os.path.join(self.data_dir, schema.file_name("align", "train"))
    f = arrow_io.SequenceFile(path)
    out = []
    for r in range(len(f)):
      question, answer = (m["content"] for m in json.loads(f.text(r))[-2:])
      try:
        task = schema.task_of(f.task(r), question, self.language)
      except ValueError as e:
        raise ValueError(f"{path}, row {r}: {e}") from None
      out.append((task, question, answer))
    return out

  def train_constants(self) -> dict[str, str]:
    """{task: the best constant answer under the official rule on the align-train golds}."""
    golds = {}
    for task, _, answer in self.train_golds:
      golds.setdefault(task, []).append(answer)
    return {t: answers_lib.best_constant(g)[0] for t, g in golds.items()}

  def floor(self, run: str) -> list[dict]:
    """Predictions of a floor: train-chosen constants per task, the first listed candidate, or
    (`floor_prior`, ranked_all only) the candidate most frequent among the align-train golds."""
    if run == PRIOR_FLOOR:
      return self._prior_floor()
    constants = self.train_constants() if run == "floor_constant" else {}
    records = []
    for q in self.questions:
      if run == "floor_constant":
        prediction = constants.get(q.task)
        if prediction is None:
          raise ValueError(f"floor_constant: no align-train question of task {q.task} to choose a constant from")
      else:
        if not q.candidates:
          continue
        prediction = q.candidates[0]
      records.append({"question": q.question, "prediction": prediction, "answer": q.answer, "task": q.task,
                      "user": q.user, "row": q.row})
    return records

  def _prior_floor(self) -> list[dict]:
    """A ranked_all pick with no model: per question with a candidate set, the candidate most
    frequent among the align-train golds of its template. It writes no answer, so only
    `ranked_all` scores it (`scored_under`)."""
    counts = candidates_lib.train_counts(self.train_golds)
    records = []
    for q in self.questions:
      options = self.candidate_sets.get(q.row)
      if options:
        records.append({"question": q.question, "answer": q.answer, "task": q.task, "user": q.user, "row": q.row,
                        "scored_under": ["ranked_all"], "ranked_all_candidates": list(options),
                        "ranked_all_prediction": candidates_lib.prior_choice(q.task, q.question, options, counts)})
    return records


def score_all(records: list[dict], samples: int, seed: int) -> dict:
  return {v: scoring.score_records(records, v, samples=samples, seed=seed) for v in scoring.VARIANTS}
