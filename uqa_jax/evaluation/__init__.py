"""Where user information is lost: the data, the encoder, or the LLM reading soft tokens.

  probe.py    does the frozen encoder's state hold a closed-set answer? (a linear probe on
              align-train users, scored on align-eval users, against the majority answer)
  ceiling.py  do the clicks the model sees determine the answer? (a count-based reader of the
              history's text features, per sub-task, next to the floors)
The reader diagnostic is an alignment run (`align.user=oracle_titles`, `uqa_model.title_states`)
and the answer log-likelihood gain is part of every evaluation (`scoring.compare_nll`); the
`diagnose` stage (`uqa_jax/stages/diagnose.py`) runs the first two, the report puts all four
side by side.
"""
