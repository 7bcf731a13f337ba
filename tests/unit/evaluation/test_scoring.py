"""The official rule and the floors, against brute force."""

import numpy as np
import pytest

from uqa_jax.data import answers as answers_lib
from uqa_jax.evaluation import paired
from uqa_jax.evaluation import scoring


def test_best_constant_matches_brute_force_over_all_strings():
  rng = np.random.default_rng(0)
  for _ in range(50):
    golds = ["".join(rng.choice(list("12ab"), size=rng.integers(1, 4))) for _ in range(rng.integers(1, 30))]
    # Every string up to length 4 over the alphabet: the constant need not be a gold.
    alphabet = [""]
    for _ in range(4):
      alphabet += [s + c for s in alphabet for c in "12ab" if len(s + c) <= 4]
    brute = max(sum(c.startswith(g) for g in golds) for c in set(alphabet)) / len(golds)
    answer, accuracy = answers_lib.best_constant(golds)
    assert accuracy == brute
    assert sum(answer.startswith(g) for g in golds) / len(golds) == brute


def test_a_longer_constant_is_credited_for_its_prefixes():
  """Under `startswith`, "15" scores on gold "1" too: the floor counts it."""
  assert answers_lib.best_constant(["1", "1", "15", "2", "3"]) == ("15", 0.6)


@pytest.mark.parametrize("gold", ["", "  "])
def test_empty_gold_is_an_error_not_a_point(gold):
  with pytest.raises(ValueError, match="empty gold"):
    answers_lib.is_correct("anything", gold)
  with pytest.raises(ValueError, match="empty gold"):
    answers_lib.best_constant(["a", gold])


def test_first_candidate_and_report():
  rows = [("IP", "b", ("a", "b")), ("IP", "a", ("a", "c")), ("MF", "3", ()), ("MF", "3", ())]
  report = answers_lib.answer_report(rows)
  assert report["IP"]["first_candidate_accuracy"] == 0.5
  assert report["MF"]["first_candidate_accuracy"] is None
  assert report["MF"]["top_answers"] == [["3", 2]] and report["MF"]["best_constant_accuracy"] == 1.0


# --- Scoring JSONL records: the official rule, strict, ranked, groups, intervals. ---------------

# Hand-written official-format lines (no `task`: the official substring rule assigns it).
OFFICIAL_LINES = [
    # DF: gold as a list (its first element is the gold); the prediction continues past it.
    {"question": "用户第3次（从1开始计数）浏览的商品的类目是什么？", "prediction": "手机壳，还有别的", "answer": ["手机壳", "x"]},
    # DF by the other marker; the prediction only shares a prefix with the gold: wrong.
    {"question": "用户最近2次浏览的商品的标题依次是什么？", "prediction": "红色", "answer": "红色连衣裙"},
    # MF: "15" starts with "1": official credits it, strict does not.
    {"question": "用户浏览历史的长度是多少？", "prediction": "15", "answer": "1"},
    # Several markers: DF's comes first in the official order although MF's is present too.
    {"question": "用户第1次（从1开始计数）浏览的商品有多少个？", "prediction": "2", "answer": "2"},
    # IP contains AP's marker too ("用户下一个可能点击的商品的"): IP is checked first.
    {"question": "用户下一个可能点击的商品的标题是什么？候选：甲；乙", "prediction": "乙", "answer": "甲"},
    {"question": "用户下一个可能点击的商品的品牌是什么？候选：A；B", "prediction": " B", "answer": "B"},
    {"question": "用户最感兴趣的3个类目是什么？", "prediction": "ａ、b、c。", "answer": "A、B、C"},
    {"question": "用户近期最感兴趣的品牌是什么？", "prediction": "Nike", "answer": "Nike"},
    {"question": "用户对类目偏好的转移路径是什么？", "prediction": "a -> b", "answer": "a -> b -> c"},
]
OFFICIAL_TASKS = ["DF", "DF", "MF", "DF", "IP", "AP", "LI", "SI", "IT"]
OFFICIAL_RIGHT = [True, False, True, True, False, False, False, True, False]
STRICT_RIGHT = [False, False, False, True, False, True, True, True, False]


def test_official_rule_task_assignment_and_group_micro_averages():
  assert [scoring.task_of_record(r) for r in OFFICIAL_LINES] == OFFICIAL_TASKS
  assert [scoring.judge(r, "official") for r in OFFICIAL_LINES] == OFFICIAL_RIGHT
  cells = scoring.score_records(OFFICIAL_LINES, "official")["cells"]
  assert cells["task/DF"]["correct"] == 2 and cells["task/DF"]["n"] == 3
  # Micro-averages: DF 2/3 + MF 1/1 -> 3/4 (a macro average would give 0.833).
  assert cells["group/sequence understanding"]["accuracy"] == 0.75
  assert cells["group/action prediction"]["accuracy"] == 0.0
  assert cells["group/interest perception"]["accuracy"] == pytest.approx(1 / 3)
  assert cells["overall"]["accuracy"] == pytest.approx(4 / 9)


def test_strict_differs_from_official_exactly_where_it_should():
  assert [scoring.judge(r, "strict") for r in OFFICIAL_LINES] == STRICT_RIGHT
  differ = [i for i, (o, s) in enumerate(zip(OFFICIAL_RIGHT, STRICT_RIGHT)) if o != s]
  # 0: a sentence that merely begins with the gold; 2: "15" for "1"; 5: leading space;
  # 6: full-width, case and trailing punctuation.
  assert differ == [0, 2, 5, 6]
  assert scoring.is_correct_strict("Ｎｉｋｅ 。", "nike") and not scoring.is_correct_strict("12", "1")
  assert scoring.is_correct_strict("「A、 B」", "a、b") and scoring.is_correct_strict("a ->  b", "A->B")
  assert not scoring.is_correct_strict("Nike Air", "NikeAir")  # spaces between words still count
  with pytest.raises(ValueError, match="only punctuation"):
    scoring.is_correct_strict("", "。")


def test_ranked_scores_only_records_with_a_ranked_prediction():
  records = [dict(r, task="IP", user="u", ranked_prediction=p) for r, p in
             [(OFFICIAL_LINES[4], "甲"), (OFFICIAL_LINES[5], "A"), (OFFICIAL_LINES[0], None)]]
  records[1]["task"] = "AP"
  score = scoring.score_records(records, "ranked")
  assert score["scored"] == 2 and score["cells"]["task/IP"]["accuracy"] == 1.0
  assert score["cells"]["task/AP"]["accuracy"] == 0.0 and "task/DF" not in score["cells"]


def test_bad_records_are_errors_naming_the_record():
  with pytest.raises(ValueError, match="record 2: no `task` field"):
    scoring.score_records([OFFICIAL_LINES[0], {"question": "?", "prediction": "a", "answer": "a"}])
  with pytest.raises(ValueError, match="record 1: `prediction` is None"):
    scoring.score_records([{"question": "用户浏览历史的长度是多少？", "prediction": None, "answer": "1"}])
  with pytest.raises(ValueError, match="1 of 2 records have no `user` field"):
    scoring.score_records([dict(OFFICIAL_LINES[0], user="u"), OFFICIAL_LINES[1]])
  with pytest.raises(ValueError, match="unknown task 'XX'"):
    scoring.score_records([{"task": "XX", "question": "q", "prediction": "a", "answer": "a"}])


def test_bootstrap_interval_resamples_users_and_matches_a_plain_loop():
  rng = np.random.default_rng(1)
  records = [{"task": "MF", "user": f"u{u}", "question": f"q{q}", "answer": "1",
              "prediction": "1" if rng.random() < 0.3 + 0.1 * (u % 3) else "2"}
             for u in range(20) for q in range(5)]
  score = scoring.score_records(records, samples=400, seed=3)
  # The same replicates by a plain loop over drawn users.
  weights = np.random.default_rng(3).multinomial(20, np.full(20, 1 / 20), size=400)
  right = np.array([[r["prediction"] == "1" for r in records[u * 5:(u + 1) * 5]] for u in range(20)])
  reps = [sum(w[u] * right[u].sum() for u in range(20)) / sum(w[u] * 5 for u in range(20)) for w in weights]
  assert score["cells"]["overall"]["ci"] == pytest.approx(list(np.percentile(reps, [2.5, 97.5])))
  lo, hi = score["cells"]["overall"]["ci"]
  assert lo < score["cells"]["overall"]["accuracy"] < hi and score["units"] == "users"


def test_paired_comparison_detects_a_real_difference_and_not_a_relabelling():
  records = [{"task": "SI", "user": f"u{u}", "question": f"q{q}", "answer": "a", "prediction": "a"}
             for u in range(30) for q in range(4)]
  worse = [dict(r, prediction="b" if i % 2 else "a") for i, r in enumerate(records)]
  assert paired.compare(records, worse)["p_value"] < 0.01
  # The same verdicts in another order: pairs are matched by (user, question), not by position.
  shuffled = [worse[i] for i in np.random.default_rng(0).permutation(len(worse))]
  same = paired.compare(worse, shuffled)
  assert same["difference"] == 0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0
  assert paired.compare(records, shuffled)["difference"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="different questions"):
    paired.compare(records, records[:-1])
  # A record without its user would be resampled as a user of its own: refused, in either run.
  unnamed = [dict(r) for r in worse]
  del unnamed[5]["user"]
  for a, b, which in ((records, unnamed, "second"), (unnamed, records, "first")):
    with pytest.raises(ValueError, match=rf"compare, {which} run: 1 of 120 records have no `user` field"):
      paired.compare(a, b)
    with pytest.raises(ValueError, match=rf"compare_nll, {which} run: 1 of 120 records have no `user` field"):
      paired.compare_nll([dict(r, answer_nll=1.0) for r in a], [dict(r, answer_nll=1.0) for r in b])
  with pytest.raises(paired.NothingScored, match="no question is scored under 'ranked'"):
    paired.compare(records, worse, "ranked")


def test_resampling_users_widens_the_interval_when_a_users_answers_go_together():
  """Each user all right or all wrong: 20 users carry the information of 20, not of 100 questions."""
  records = [{"task": "SI", "user": f"u{u}", "question": f"q{q}", "answer": "a", "prediction": "a" if u % 2 else "b"}
             for u in range(20) for q in range(5)]
  by_user = scoring.score_records(records, samples=2000)["cells"]["overall"]["ci"]
  by_record = scoring.score_records([{k: v for k, v in r.items() if k != "user"} for r in records],
                                    samples=2000)["cells"]["overall"]["ci"]
  # Binomial standard errors: sqrt(.25/20) = 0.112 vs sqrt(.25/100) = 0.05 -> 95% widths ~0.44 vs ~0.2.
  assert by_user[1] - by_user[0] == pytest.approx(0.44, abs=0.08)
  assert by_record[1] - by_record[0] == pytest.approx(0.2, abs=0.05)


def test_paired_p_value_agrees_with_an_exact_sign_test():
  """40 users, one question each: a right and b wrong for 14, the reverse for 4, both alike for 22.
  The exact two-sided sign test on the 18 discordant pairs gives p = 0.031."""
  from math import comb
  pattern = [(1, 0)] * 14 + [(0, 1)] * 4 + [(1, 1)] * 11 + [(0, 0)] * 11
  a = [{"task": "AP", "user": f"u{i}", "question": "q", "answer": "x", "prediction": "x" if ra else "y"}
       for i, (ra, _) in enumerate(pattern)]
  b = [dict(r, prediction="x" if rb else "y") for r, (_, rb) in zip(a, pattern)]
  exact = 2 * sum(comb(18, k) for k in range(0, 5)) / 2 ** 18
  assert exact == pytest.approx(0.0309, abs=1e-4)
  c = paired.compare(a, b, samples=4000)
  assert c["difference"] == pytest.approx(10 / 40)
  assert 0.3 * exact < c["p_value"] < 3 * exact


def test_answer_nll_gain_is_paired_per_task_and_matches_a_plain_loop():
  rng = np.random.default_rng(4)
  own, other = [], []
  for u in range(25):
    for t in ("SI", "AP"):
      nll = float(rng.gamma(2.0, 0.5))
      gain = 0.3 if t == "SI" else 0.0  # planted: the own prompt helps SI only
      own.append({"task": t, "user": f"u{u}", "question": t, "answer": "a", "prediction": "", "answer_nll": nll})
      other.append(dict(own[-1], answer_nll=nll + gain + float(rng.normal(0, 0.05)) * (t == "AP")))
  # Pairs are matched by (user, question), not by position.
  order = np.random.default_rng(0).permutation(len(other))
  cells = paired.compare_nll(own, [other[i] for i in order], samples=500, seed=2)
  assert cells["task/SI"]["gain"] == pytest.approx(0.3) and cells["task/SI"]["ci"][0] > 0.29
  assert cells["task/SI"]["p_value"] < 0.01
  assert cells["task/AP"]["ci"][0] < 0 < cells["task/AP"]["ci"][1] and cells["task/AP"]["p_value"] > 0.05
  # The overall interval by a plain loop over the same drawn users.
  weights = np.random.default_rng(2).multinomial(25, np.full(25, 1 / 25), size=500)
  diff_U = np.array([other[2 * u]["answer_nll"] + other[2 * u + 1]["answer_nll"]
                     - own[2 * u]["answer_nll"] - own[2 * u + 1]["answer_nll"] for u in range(25)])
  reps = [w @ diff_U / (2 * w.sum()) for w in weights]
  assert cells["overall"]["ci"] == pytest.approx(list(np.percentile(reps, [2.5, 97.5])))
  assert cells["overall"]["own"] == pytest.approx(np.mean([r["answer_nll"] for r in own]))


def test_answer_nll_gain_refuses_missing_or_non_finite_likelihoods():
  own = [{"task": "SI", "user": "u", "question": "q", "answer": "a", "prediction": "a", "answer_nll": 1.0}]
  with pytest.raises(paired.MissingLikelihood, match=r"record 1 \(second run\) has no answer_nll"):
    paired.compare_nll(own, [{k: v for k, v in own[0].items() if k != "answer_nll"}])
  with pytest.raises(FloatingPointError, match="record 1 \\(first run\\) has answer_nll nan"):
    paired.compare_nll([dict(own[0], answer_nll=float("nan"))], own)


def test_changed_answers_counts_differing_and_discordant_pairs_as_a_plain_count():
  """Per task and overall: answers that differ between the two prompts, and (official rule,
  `prediction.startswith(gold)`) the ones right with one prompt only; records paired by user and
  question, not by order."""
  rec = lambda user, task, question, pred, gold: {"user": user, "task": task, "question": question,
                                                  "prediction": pred, "answer": gold}
  own = [rec("u1", "SI", "q1", "dog food", "dog food"),      # right with own only
         rec("u1", "MF", "q2", "1", "1"),                    # same answer, both right
         rec("u2", "SI", "q1", "earbuds", "dog food"),       # changed, both wrong
         rec("u2", "IT", "q3", "A -> B", "A -> B -> C")]     # same answer, both wrong
  other = [rec("u2", "IT", "q3", "A -> B", "A -> B -> C"),
           rec("u2", "SI", "q1", "desk lamps", "dog food"),
           rec("u1", "MF", "q2", "1", "1"),
           rec("u1", "SI", "q1", "dog food, yoga mats", "dog food, yoga mats")]
  other[3]["answer"] = "dog food"  # the gold is the question's: right with the other prompt too (startswith)
  out = paired.changed_answers(own, other)
  assert out["task/SI"] == {"n": 2, "changed": 2, "own_only": 0, "other_only": 0}
  assert out["task/MF"] == {"n": 1, "changed": 0, "own_only": 0, "other_only": 0}
  assert out["overall"] == {"n": 4, "changed": 2, "own_only": 0, "other_only": 0}
  other[3]["prediction"] = "yoga mats"
  assert paired.changed_answers(own, other)["task/SI"] == {"n": 2, "changed": 2, "own_only": 1, "other_only": 0}
  with pytest.raises(ValueError, match="different questions"):
    paired.changed_answers(own, other[:3])
