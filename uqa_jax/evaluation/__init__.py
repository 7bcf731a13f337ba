"""Stage 3 and the diagnostics, as a library: scoring answers and the statistics around them.

  scoring.py    verdicts (official, strict, ranked), per task / group / overall with bootstrap
                intervals over users (`bootstrap.py`); predictions as JSONL
  paired.py     two runs question by question: accuracy difference, changed answers, NLL gain
  questions.py  the eval questions, their users and soft tokens; shuffled partners
  evaluator.py  the aligned model answering every question (Stage 3's work)
  tables.py     the report's tables and verdicts from stored results alone
  diagnosis.py  where user information is lost: data -> encoder -> reader -> adapter -> answers
  probe.py      does the frozen encoder's state hold a closed-set answer? (a linear probe)
  ceiling.py    do the clicks the model sees determine the answer? (a count-based reader)
  retrieval.py  Stage 1's next-item Recall / NDCG and the popularity baseline
"""
