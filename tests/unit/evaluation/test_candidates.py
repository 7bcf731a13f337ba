"""ranked_all's candidate sets (evaluation/candidates.py) and their scoring, on hand-built cases."""

import collections
import dataclasses
import itertools

import numpy as np
import pytest

from uqa_jax.evaluation import candidates
from uqa_jax.evaluation import paired
from uqa_jax.evaluation import scoring


@dataclasses.dataclass
class Q:
  row: int
  user: str
  task: str
  question: str
  answer: str
  candidates: tuple = ()


SI = "Which category is the user most interested in recently?"
SI_BRAND = "Which brand is the user most interested in recently?"


def test_templates_mask_numbers_and_quoted_values_only():
  assert candidates.template_of("What is the category of item number 3 the user clicked (counting from 1)?") == \
      candidates.template_of("What is the category of item number 17 the user clicked (counting from 1)?")
  assert candidates.template_of('How many of the user\'s clicked items have brand "Acme"?') == \
      candidates.template_of('How many of the user\'s clicked items have brand "Zed Co"?')
  assert candidates.template_of("用户浏览过的品牌为「甲」的商品有多少个？") == candidates.template_of("用户浏览过的品牌为「乙丙」的商品有多少个？")
  assert candidates.template_of(SI) != candidates.template_of(SI_BRAND)
  assert candidates.template_of("Which item next? Candidates: a; b") == candidates.template_of("Which item next? Candidates: c")
  assert candidates.template_of("用户下一个可能点击的商品的标题是什么？候选：甲；乙") == "用户下一个可能点击的商品的标题是什么？"


def test_a_hand_built_draw_keeps_its_rules():
  qs = [Q(0, "u0", "SI", SI, "shoes"), Q(1, "u0", "SI", SI, "hats"),  # u0 asked twice: neither is u0's distractor
        Q(2, "u1", "SI", SI, "bags"), Q(3, "u2", "SI", SI, "bags"), Q(4, "u3", "SI", SI, "socks"),
        Q(5, "u4", "SI", SI_BRAND, "acme"),  # another template: never a category distractor
        Q(6, "u5", "LI", SI, "coats"),  # another task
        Q(7, "u6", "IP", "Which item next? Candidates: a; b; c; d", "c", ("a", "b", "c", "d"))]
  sets = candidates.draw(qs, k=10, seed=3)
  assert sorted(sets[0]) == ["bags", "shoes", "socks"]  # every other user's gold, once each, and the gold
  assert sorted(sets[1]) == ["bags", "hats", "socks"]
  assert sorted(sets[2]) == ["bags", "hats", "shoes", "socks"]
  assert sets[5] == () and sets[6] == ()  # nobody else asked their template: not scored
  assert sets[7] == ("a", "b", "c", "d")  # listed candidates are kept as listed
  assert candidates.draw(qs, k=10, seed=3) == sets  # seeded
  assert len(candidates.draw(qs, k=2, seed=3)[2]) == 2
  with pytest.raises(ValueError, match="not among its listed candidates"):
    candidates.draw([Q(0, "u", "IP", "x", "e", ("a", "b"))])
  # a list answer's distractors have as many items: "the last 2 titles" is never answered by 1
  last = "What are the titles of the last {k} items the user clicked, in order from earliest to latest?"
  lists = [Q(0, "a", "DF", last.format(k=2), "t1, t2"), Q(1, "b", "DF", last.format(k=2), "t3, t4"),
           Q(2, "c", "DF", last.format(k=1), "t5"), Q(3, "d", "DF", last.format(k=3), "t6, t7, t8"),
           Q(4, "e", "IT", "How has it shifted?", "A -> B"), Q(5, "f", "IT", "How has it shifted?", "C -> D -> E"),
           Q(6, "g", "IT", "How has it shifted?", "F -> G")]
  drawn = candidates.draw(lists, k=10, seed=0)
  assert sorted(drawn[0]) == ["t1, t2", "t3, t4"] and drawn[2] == () and drawn[3] == ()
  assert sorted(drawn[4]) == ["A -> B", "F -> G"] and drawn[5] == ()
  assert candidates.summary(sets, 10) == {"k": 10, "questions": 8, "not_scored": 2, "fewer_than_k": 6, "min": 3}


def _skewed(alpha, n_users=600, seed=0, values=40):
  """SI questions (one per user) whose golds follow a popularity curve p_i ~ 1 / i**alpha."""
  rng = np.random.default_rng(seed)
  p = 1.0 / np.arange(1, values + 1) ** alpha
  golds = rng.choice([f"cat{i}" for i in range(values)], size=n_users, p=p / p.sum())
  return [Q(i, f"u{i}", "SI", SI, str(g)) for i, g in enumerate(golds)]


def _prior_accuracy(qs, sets, alpha):
  """The train prior's accuracy, its counts from an independent draw of the same popularity."""
  counts = {candidates.group_of("SI", SI, "x"): collections.Counter(q.answer for q in _skewed(alpha, seed=1))}
  return np.mean([candidates.prior_choice("SI", SI, s, counts) == q.answer for q, s in zip(qs, sets)])


@pytest.mark.parametrize("alpha", [0.3, 1.2])
def test_distractors_follow_the_golds_frequencies_so_the_prior_sits_at_its_bound(alpha):
  """A gold that answers a share s of the questions is in every one of those sets, so no design
  keeps the prior below s; weighted draws put it near max(1/K, s), uniform ones far above."""
  qs = _skewed(alpha)
  sets = candidates.draw(qs, k=10, seed=0)
  golds = collections.Counter(q.answer for q in qs)
  inclusion = {v: sum(v in s for q, s in zip(qs, sets) if q.answer != v) / (len(qs) - n) for v, n in golds.items()}
  rank = lambda x: np.argsort(np.argsort(x))
  values = sorted(golds)  # a distractor is the more often drawn the more often it is a gold: rank correlation
  assert np.corrcoef(rank([golds[v] for v in values]), rank([inclusion[v] for v in values]))[0, 1] > 0.8
  share = golds.most_common(1)[0][1] / len(qs)
  prior = _prior_accuracy(qs, sets, alpha)
  assert prior < max(0.1, share) + 0.04, (prior, share)
  rng = np.random.default_rng(0)
  distinct = sorted(golds)
  uniform = [(q.answer, *rng.choice([v for v in distinct if v != q.answer], 9, replace=False)) for q in qs]
  assert _prior_accuracy(qs, uniform, alpha) > prior + 0.03, prior


def test_the_pick_is_the_lowest_nll_by_hand_and_ignores_the_listing_order():
  nll = {"bags": 1.25, "shoes": 0.75, "hats": 0.75, "socks": 2.0}  # a tie between shoes and hats
  assert candidates.most_likely(nll) == "hats"  # by hand: lowest 0.75, the tie to the first in sorted order
  for order in itertools.permutations(nll):
    assert candidates.most_likely({c: nll[c] for c in order}) == "hats"
    assert candidates.prior_choice("SI", SI, list(order), {}) == "bags"  # no counts: sorted order decides
  counts = {candidates.group_of("SI", SI, "x"): collections.Counter({"socks": 5, "shoes": 2})}
  assert all(candidates.prior_choice("SI", SI, list(o), counts) == "socks" for o in itertools.permutations(nll))


def _record(gold, cands, picked, user="u", question="q?", **extra):
  return {"question": question, "prediction": "", "answer": gold, "task": "SI", "user": user,
          "ranked_all_candidates": cands, "ranked_all_prediction": picked, **extra}


def test_ranked_all_scoring_chance_and_refusals():
  records = [_record("a", ["a", "b"], "a", user="u1"), _record("a", ["b", "a", "c", "d"], "b", user="u2"),
             {"question": "q?", "prediction": "x", "answer": "x", "task": "SI", "user": "u3"}]  # no set: not scored
  s = scoring.score_records(records, "ranked_all", samples=50)
  c = s["cells"]["overall"]
  assert (s["scored"], c["correct"], c["accuracy"]) == (2, 1, 0.5)
  assert c["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
  with pytest.raises(ValueError, match="the gold 'a' among them"):
    scoring.score_records([_record("a", ["b", "c"], "b")], "ranked_all")
  with pytest.raises(ValueError, match="not among its candidates"):
    scoring.score_records([_record("a", ["a", "c"], "z")], "ranked_all")
  prior = _record("a", ["a", "b"], "a", scored_under=["ranked_all"])
  del prior["prediction"]
  assert scoring.score_records([prior], "official")["scored"] == 0  # a floor without an answer
  assert scoring.score_records([prior], "ranked_all")["scored"] == 1


def test_runs_ranked_on_different_sets_are_not_compared():
  a = [_record("a", ["a", "b", "c"], "a")]
  b = [_record("a", ["a", "b", "d"], "a")]
  with pytest.raises(ValueError, match="among other candidates"):
    paired.compare(a, b, "ranked_all")
  one_sided = [_record("a", ["a", "b", "c"], "a", user="u2"), _record("a", None, None, user="u3")]
  other = [_record("a", ["a", "b", "c"], "a", user="u2"), _record("a", ["a", "b"], "a", user="u3")]
  with pytest.raises(ValueError, match="ranked in one run only"):
    paired.compare(one_sided, other, "ranked_all")
  same = [_record("a", ["c", "a", "b"], "b")]  # the same set in another order
  assert paired.compare(a, same, "ranked_all", samples=20)["difference"] == 1.0


def test_the_prior_counts_each_template_apart_and_masks_its_numbers():
  """By hand: within one sub-task, template A's train golds are trainers x3, socks x1 and template
  B's socks x5; counted per sub-task socks would win A's question (6 against 3), per template
  trainers does. A's questions differ in their number only and count together (unmasked, a(7)
  would have no counts and the sorted order would pick socks)."""
  a = lambda n: f"Which item did the user click at position {n}?"
  b = "Which item did the user click most often?"
  train = [("SI", a(1), "trainers"), ("SI", a(2), "trainers"), ("SI", a(3), "trainers"), ("SI", a(4), "socks")]
  train += [("SI", b, "socks")] * 5
  counts = candidates.train_counts(train)
  assert candidates.prior_choice("SI", a(7), ["socks", "trainers"], counts) == "trainers"
  assert candidates.prior_choice("SI", b, ["trainers", "socks"], counts) == "socks"
  assert candidates.prior_choice("DF", a(7), ["trainers", "socks"], counts) == "socks"  # another task: no counts, sorted order
