"""Reconstruction rows: a history prefix -> its last clicks' texts, newest first, checked by hand
against the file's own rows; seeded by the stream position (the same on any number of processes);
cut to fit; mixed with QA batches in a resumable order."""

import json
import os

import grain
import numpy as np
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import pipeline
from uqa_jax.data import reconstruct
from uqa_jax.data import schema

# max_len holds every history whole: a batch's `lengths` is then the drawn prefix's
CFG = pipeline.InputConfig(batch_size=6, max_len=schema.MAX_LEN, max_text_len=192, num_epochs=None, seed=3)
TASK = reconstruct.Task(clicks=3, fields=("title", "category", "brand"))


def _ds(en_dir, tokenizer, cfg=CFG, task=TASK, **kw):
  return pipeline.make_dataset(os.path.join(en_dir, schema.file_name("align", "train")), cfg, tokenizer=tokenizer,
                               process_index=kw.pop("process_index", 0), process_count=kw.pop("process_count", 1),
                               reconstruct=task)


def _text(tokenizer, batch, r, mask="attention_mask"):
  return tokenizer.decode(batch["input_ids"][r][batch[mask][r] == 1])


def test_each_row_is_a_prefix_and_its_newest_clicks_written_out(en_dir, tokenizer):
  """Every row of two batches, by hand from the file: the row's history cut to `lengths` steps
  (items, attributes and times alike), and the answer the last 3 clicks' decoded field, newest
  first, one numbered line each, the question naming the field and the count."""
  f = arrow_io.SequenceFile(os.path.join(en_dir, "align_data_train.arrow"))
  names = {column: name for name, column in reconstruct.FIELDS.items()}
  full = {f.row(i)[schema.ITEM_COLUMN].ids.tobytes(): i for i in range(len(f))}
  seen_fields, cut_rows = set(), 0
  it = iter(_ds(en_dir, tokenizer))
  for _ in range(2):
    b = next(it)
    assert (b["task"] == reconstruct.TASK).all() and b["valid"].all()
    for r in range(CFG.batch_size):
      steps = int(b["lengths"][r])
      items = b[schema.ITEM_COLUMN][r][:steps]
      # the source row: the one whose history starts with these items (histories are distinct)
      source = [i for key, i in full.items() if np.frombuffer(key, np.int64)[:steps].tolist() == items.tolist()]
      assert source, r
      row = f.row(source[0])
      cut_rows += steps < row[schema.ITEM_COLUMN].num_steps
      for column in schema.FEATURE_COLUMNS[1:]:
        width = CFG.bag_sizes.get(column, 1)
        for t in range(steps):  # the prefix's own bags (their first `width` ids), padding after
          bag = row[column].bag(t)[:width]
          np.testing.assert_array_equal(b[column][r][t], np.pad(bag, (0, width - bag.size)))
        assert not b[column][r][steps:].any()
      if schema.TIME_COLUMN in row:
        np.testing.assert_array_equal(b["timestamps"][r][:steps], row[schema.TIME_COLUMN][:steps] - row[schema.TIME_COLUMN][0])
      answer = _text(tokenizer, b, r, "loss_mask")
      question = _text(tokenizer, b, r)
      field = next(name for name in reconstruct.FIELDS if f"the {name} of each" in question)
      seen_fields.add(field)
      bags = row[reconstruct.FIELDS[field]]
      want = "\n".join(f"{i + 1}. {tokenizer.decode(bags.bag(t).tolist()).strip()}"
                       for i, t in enumerate(range(steps - 1, steps - 4, -1)))
      assert answer == want + "<|im_end|>", (answer, want)
      assert f"the user's last 3 clicked items, newest first" in question
  assert seen_fields == set(names.values()) and cut_rows > 0


def test_the_draw_is_the_streams_not_the_processes(en_dir, tokenizer):
  """Two processes' local batches, stacked, are the one-process batches (prefixes and fields
  drawn by stream position); the same seed draws the same rows, another seed others."""
  cfg = pipeline.InputConfig(**{**CFG.__dict__, "batch_size": 4})
  whole = [b for b, _ in zip(_ds(en_dir, tokenizer, cfg), range(3))]
  parts = [[b for b, _ in zip(_ds(en_dir, tokenizer, cfg, process_index=p, process_count=2), range(3))]
           for p in range(2)]
  for k, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts]), batch[key])
  again = next(iter(_ds(en_dir, tokenizer, cfg)))
  np.testing.assert_array_equal(again["input_ids"], whole[0]["input_ids"])


def test_the_same_row_draws_by_position_and_seed(tokenizer):
  """One row at 40 stream positions draws several prefixes and fields; another seed, at the same
  positions, other ones (the row order is not what changes here: there is one row)."""
  source, chat = _Source(tokenizer), chat_lib.ChatTokenizer(tokenizer, 192, "", 64)
  draws = lambda seed: [(o[schema.ITEM_COLUMN].num_steps, _chat_of(o)[0]["content"]) for o in (
      reconstruct.Reconstruct(source, chat, task=reconstruct.Task(3, ("title", "brand")), seed=seed,
                              language="en").map(position) for position in range(40))]
  first = draws(0)
  assert first == draws(0)
  assert {steps for steps, _ in first} == {3, 4, 5}  # from `clicks` to the whole history
  assert len({question for _, question in first}) == 2
  assert draws(1) != first


class _Source:
  """One hand-made row: 5 clicks, titles of 1..5 words, click 3's brand bag empty."""
  path = "hand-made"

  def __init__(self, tokenizer):
    words = ["red", "kettle", "blue", "lamp", "green"]
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    bags = lambda texts: arrow_io.Bags(ids=np.array([t for s in texts for t in enc(s)], np.int64),
                                       offsets=np.cumsum([0] + [len(enc(s)) for s in texts]).astype(np.int32))
    row = {c: arrow_io.Bags(ids=np.arange(1, 6, dtype=np.int64), offsets=np.arange(6, dtype=np.int32))
           for c in schema.FEATURE_COLUMNS}
    row["uni_seq_title_bpe_token_ids"] = bags([" ".join(words[:n]) for n in range(1, 6)])
    row["uni_seq_brand_bpe_token_ids"] = bags(["Acme", "Bolt", "", "Dyna", "Eon"])
    row[schema.TIME_COLUMN] = np.array([10, 20, 30, 40, 50], np.int64)
    row[schema.TEXT_COLUMN] = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    self.row = row

  def __len__(self):
    return 1

  def __getitem__(self, i):
    return dict(self.row, _row=i)


def _chat_of(out):
  return json.loads(out[schema.TEXT_COLUMN])


def test_a_hand_made_row_every_column_cut_and_the_answer_by_hand(tokenizer):
  source = _Source(tokenizer)
  chat = chat_lib.ChatTokenizer(tokenizer, 192, "", 64)
  make = lambda task, seed=0: reconstruct.Reconstruct(source, chat, task=task, seed=seed, language="en")
  # find a stream position whose draw cuts the row to 4 clicks
  brand = make(reconstruct.Task(3, ("brand",)))
  out = next(o for o in (brand.map(position) for position in range(50))
             if o[schema.ITEM_COLUMN].num_steps == 4)
  for column in schema.FEATURE_COLUMNS:
    assert out[column].num_steps == 4 and out[column].bag(3).size == source.row[column].bag(3).size
  assert out[schema.ITEM_COLUMN].ids.tolist() == [1, 2, 3, 4]
  assert out[schema.TIME_COLUMN].tolist() == [10, 20, 30, 40]
  assert _chat_of(out)[1]["content"] == "1. Dyna\n2. (none)\n3. Bolt"  # newest first; an empty bag named
  assert _chat_of(out)[0]["content"] == ("Write the brand of each of the user's last 3 clicked items, newest "
                                         "first, one per line.")
  # an answer that does not fit max_answer_len drops its oldest lines and says how many it asks for
  short = reconstruct.Reconstruct(source, chat_lib.ChatTokenizer(tokenizer, 192, "", 8),
                                  task=reconstruct.Task(3, ("title",)), seed=0, language="en")
  out = next(o for o in (short.map(p) for p in range(50)) if o[schema.ITEM_COLUMN].num_steps == 5)
  lines = _chat_of(out)[1]["content"].split("\n")
  assert lines[0] == "1. red kettle blue lamp green" and len(lines) < 3
  assert f"last {len(lines)} clicked" in _chat_of(out)[0]["content"]
  # a click whose text alone does not fit is an error naming the row
  tiny = reconstruct.Reconstruct(source, chat_lib.ChatTokenizer(tokenizer, 192, "", 3),
                                 task=reconstruct.Task(3, ("title",)), seed=0, language="en")
  with pytest.raises(ValueError, match=r"hand-made, row 0 \(reconstruction, first \d clicks\): the newest click's "
                                       "title alone does not fit"):
    for p in range(50):
      tiny.map(p)
  with pytest.raises(ValueError, match="fields from title, category, brand"):
    reconstruct.Task(3, ("colour",))


def test_reconstruction_batches_come_first_then_every_nth_and_resume_in_place():
  """`first` reconstruction batches, then every `every`-th; the mixed iterator's state restores
  both streams and the count, so a resumed iterator continues with the same batches."""
  assert [reconstruct.is_reconstruction(n, 2, 3) for n in range(9)] == [True, True, False, False, True, False,
                                                                         False, True, False]
  assert not any(reconstruct.is_reconstruction(n, 0, 0) for n in range(5))
  make = lambda: reconstruct.Mixed(pipeline.Batches(grain.MapDataset.range(100)),
                                   pipeline.Batches(grain.MapDataset.range(1000, 1100)), first=2, every=3)
  it = iter(make())
  head = [next(it) for _ in range(5)]
  assert head == [1000, 1001, 0, 1, 1002]
  state = it.get_state()
  want = [next(it) for _ in range(6)]
  resumed = iter(make())
  resumed.set_state(state)
  assert [next(resumed) for _ in range(6)] == want == [2, 3, 1003, 4, 5, 1004]
