"""grain pipeline: fixed shapes, most-recent truncation, resumable iterator, process sharding."""

import json
import os

import numpy as np
import pytest

from uqa_jax.data import arrow_io
from uqa_jax.data import batching
from uqa_jax.data import chat as chat_lib
from uqa_jax.data import pipeline
from uqa_jax.data import schema

CFG = pipeline.InputConfig(batch_size=8, max_len=16, max_text_len=192, num_epochs=None)


def _ds(en_dir, kind="pretrain", split="train", cfg=CFG, **kw):
  return pipeline.make_dataset(os.path.join(en_dir, schema.file_name(kind, split)), cfg,
                               process_index=kw.pop("process_index", 0),
                               process_count=kw.pop("process_count", 1), **kw)


def test_batches_have_fixed_shapes(en_dir):
  widths = dict(CFG.bag_sizes)
  it = iter(_ds(en_dir))
  for _ in range(5):
    b = next(it)
    assert b[schema.ITEM_COLUMN].shape == (8, 16) and b["lengths"].shape == (8,)
    for c in schema.FEATURE_COLUMNS[1:]:
      assert b[c].shape == (8, 16, widths[c]) and b[c].dtype == np.int32


def test_truncation_keeps_the_most_recent_steps(en_dir):
  cfg = pipeline.InputConfig(batch_size=4, max_len=16, shuffle=False, num_epochs=1)
  f = arrow_io.SequenceFile(os.path.join(en_dir, "pretrain_data_train.arrow"))
  b = next(iter(_ds(en_dir, cfg=cfg)))
  for r in range(4):
    ids = f.bags(r, schema.ITEM_COLUMN).ids
    n = min(len(ids), 16)
    assert b["lengths"][r] == n
    np.testing.assert_array_equal(b[schema.ITEM_COLUMN][r, :n], ids[-16:])
    assert (b[schema.ITEM_COLUMN][r, n:] == 0).all()
    titles = f.bags(r, "uni_seq_title_bpe_token_ids")
    last = titles.bag(titles.num_steps - 1)[:16]
    np.testing.assert_array_equal(b["uni_seq_title_bpe_token_ids"][r, n - 1, :len(last)], last)


def test_timestamps_are_truncated_like_items_and_relative(en_dir):
  cfg = pipeline.InputConfig(batch_size=4, max_len=16, shuffle=False, num_epochs=1)
  f = arrow_io.SequenceFile(os.path.join(en_dir, "pretrain_data_train.arrow"))
  assert f.has_time  # the synthetic data carries click times
  b = next(iter(_ds(en_dir, cfg=cfg)))
  assert b["timestamps"].shape == (4, 16) and b["timestamps"].dtype == np.int32
  for r in range(4):
    kept = f.timestamps(r)[-16:]
    n = kept.size
    np.testing.assert_array_equal(b["timestamps"][r, :n], kept - kept[0])
    assert (b["timestamps"][r, n:] == 0).all()


def test_times_to_array_clips_to_int32():
  out = pipeline.times_to_array(np.array([0, 5, 2**40], np.int64), 4)
  np.testing.assert_array_equal(out, [0, 5, np.iinfo(np.int32).max, 0])


def test_bags_to_array_matches_a_plain_loop():
  rng = np.random.default_rng(0)
  lists = [rng.integers(1, 9, size=rng.integers(0, 7)).tolist() for _ in range(23)]
  offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int32)
  bags = arrow_io.Bags(np.array(sum(lists, []), np.int64), offsets)
  got = pipeline.bags_to_array(bags, max_len=10, width=4)
  want = np.zeros((10, 4), np.int32)
  for t, bag in enumerate(lists[-10:]):
    want[t, :min(4, len(bag))] = bag[:4]
  np.testing.assert_array_equal(got, want)


def test_restored_iterator_continues_with_the_same_batches(en_dir):
  it = iter(_ds(en_dir))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = iter(_ds(en_dir))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_same_seed_same_order_other_seed_other_order(en_dir):
  first = lambda cfg: next(iter(_ds(en_dir, cfg=cfg)))[schema.ITEM_COLUMN]
  np.testing.assert_array_equal(first(CFG), first(CFG))
  other = pipeline.InputConfig(**{**CFG.__dict__, "seed": 1})
  assert not np.array_equal(first(CFG), first(other))


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_processes_hold_their_block_of_each_global_batch(en_dir, drop_remainder):
  """P processes' local batches, stacked in process order, are the one-process batches (shuffled,
  several epochs); an eval run pads the last global batch so every process makes as many batches."""
  cfg = pipeline.InputConfig(batch_size=12, max_len=16, num_epochs=2, drop_remainder=drop_remainder)
  whole = list(_ds(en_dir, cfg=cfg))
  for count in (2, 3):
    parts = [list(_ds(en_dir, cfg=cfg, process_index=p, process_count=count)) for p in range(count)]
    assert all(len(p) == len(whole) for p in parts), (count, [len(p) for p in parts], len(whole))
    for k, batch in enumerate(whole):
      valid = batch["valid"]
      for key in batch:
        stacked = np.concatenate([p[k][key] for p in parts])
        if drop_remainder:
          np.testing.assert_array_equal(stacked, batch[key])
        else:  # the same rows where valid, padding in the same places
          np.testing.assert_array_equal(np.concatenate([p[k]["valid"] for p in parts]), valid)
          np.testing.assert_array_equal(stacked[valid], batch[key][valid])
      assert drop_remainder or valid.all() or k == len(whole) - 1
  # the data make the eval case pad: 2 epochs of its rows do not fill the last batch of 12
  assert drop_remainder or not whole[-1]["valid"].all()


def test_a_global_batch_must_split_over_the_processes(en_dir):
  with pytest.raises(ValueError, match="batch_size 8 is global: it must split evenly over 3 processes"):
    _ds(en_dir, process_index=0, process_count=3)


def test_eval_pads_the_last_batch_and_marks_it(en_dir):
  cfg = pipeline.InputConfig(batch_size=32, max_len=16, shuffle=False, num_epochs=1,
                                drop_remainder=False)
  batches = list(_ds(en_dir, split="eval", cfg=cfg))
  n = len(arrow_io.SequenceFile(os.path.join(en_dir, "pretrain_data_eval.arrow")))
  assert sum(int(b["valid"].sum()) for b in batches) == n
  assert all(b[schema.ITEM_COLUMN].shape == (32, 16) for b in batches)


def test_align_labels_cover_only_the_answer_and_chat_end(en_dir, tokenizer):
  cfg = pipeline.InputConfig(batch_size=4, max_len=16, shuffle=False, num_epochs=1)
  b = next(iter(_ds(en_dir, kind="align", cfg=cfg, tokenizer=tokenizer)))
  f = arrow_io.SequenceFile(os.path.join(en_dir, "align_data_train.arrow"))
  assert b["input_ids"].shape == b["loss_mask"].shape == (4, 192)
  for r in range(4):
    answer = json.loads(f.text(r))[1]["content"]
    supervised = tokenizer.decode(b["input_ids"][r][b["loss_mask"][r] == 1])
    assert supervised == answer + "<|im_end|>"  # the answer and end-of-turn, not the newline after
    assert schema.TASKS[b["task"][r]] == f.task(r)
    assert b["attention_mask"][r].sum() > b["loss_mask"][r].sum()
    # No system turn unless configured: the template's default one is cut off.
    n = int(b["attention_mask"][r].sum())
    text = tokenizer.decode(b["input_ids"][r][:n])
    assert text.startswith("<|im_start|>user\n") and "system" not in text
    question = json.loads(f.text(r))[0]["content"]
    assert tokenizer.decode(b["input_ids"][r][b["question_at"][r]:n]).startswith(question)
    assert tokenizer.decode(b["input_ids"][r][:b["question_at"][r]]) == "<|im_start|>user\n"


def test_a_configured_system_prompt_is_rendered(en_dir, tokenizer):
  cfg = pipeline.InputConfig(batch_size=2, max_len=16, shuffle=False, num_epochs=1,
                                system_prompt="Answer in a few words.")
  b = next(iter(_ds(en_dir, kind="align", cfg=cfg, tokenizer=tokenizer)))
  text = tokenizer.decode(b["input_ids"][0][:int(b["attention_mask"][0].sum())])
  assert text.startswith("<|im_start|>system\nAnswer in a few words.<|im_end|>\n<|im_start|>user\n")
  assert tokenizer.decode(b["input_ids"][0][:b["question_at"][0]]).endswith("<|im_start|>user\n")


def test_history_clicks_write_the_last_titles_above_the_question_and_keep_the_labels(en_dir, tokenizer):
  base = pipeline.InputConfig(batch_size=4, max_len=16, shuffle=False, num_epochs=1, max_text_len=512)
  plain = next(iter(_ds(en_dir, kind="align", cfg=base, tokenizer=tokenizer)))
  cfg = pipeline.InputConfig(**{**base.__dict__, "history_clicks": 5})
  b = next(iter(_ds(en_dir, kind="align", cfg=cfg, tokenizer=tokenizer)))
  f = arrow_io.SequenceFile(os.path.join(en_dir, "align_data_train.arrow"))
  for r in range(4):
    titles = f.row(r)["uni_seq_title_bpe_token_ids"]
    lines = [f"{i + 1}. {tokenizer.decode(titles.bag(t).tolist())}"
             for i, t in enumerate(range(titles.num_steps - 5, titles.num_steps))]
    question = json.loads(f.text(r))[0]["content"]
    text = tokenizer.decode(b["input_ids"][r][:int(b["attention_mask"][r].sum())])
    assert "Titles of the user's last 5 clicked items, oldest first:\n" + "\n".join(lines) + "\n\n" + question in text
    supervised = lambda batch: tokenizer.decode(batch["input_ids"][r][batch["loss_mask"][r] == 1])
    assert supervised(b) == supervised(plain)  # the answer and end-of-turn only, as without history
    assert b["task"][r] == plain["task"][r]


def test_too_long_chat_is_an_error_naming_the_file(en_dir, tokenizer):
  cfg = pipeline.InputConfig(batch_size=2, max_len=16, max_text_len=8, num_epochs=1)
  with pytest.raises(ValueError, match="align_data_train.arrow.*max_text_len=8"):
    next(iter(_ds(en_dir, kind="align", cfg=cfg, tokenizer=tokenizer)))


def test_align_file_without_tokenizer_is_an_error(en_dir):
  with pytest.raises(ValueError, match="a tokenizer is required"):
    _ds(en_dir, kind="align")


def test_bag_truncation_counts_every_cut_bag(en_dir):
  path = os.path.join(en_dir, "pretrain_data_train.arrow")
  sizes = dict(CFG.bag_sizes, uni_seq_title_bpe_token_ids=3)
  report = pipeline.bag_truncation(path, sizes.items())
  f = arrow_io.SequenceFile(path)
  widths = [len(b) for r in range(len(f)) for b in f.bags(r, "uni_seq_title_bpe_token_ids").to_lists()]
  assert report["uni_seq_title_bpe_token_ids"] == (sum(w > 3 for w in widths), len(widths), max(widths))
  assert "uni_seq_item_id" not in report


@pytest.mark.parametrize("task,question,answer,why", [
    ("XX", None, None, "unknown task label 'XX'"),
    ("SI", None, None, "task mismatch"),
    (None, "What is the weather like?", None, "unclassifiable"),
    (None, None, " ", "empty gold answer"),
])
def test_a_bad_row_is_an_error_naming_it(en_dir, tmp_path, tokenizer, task, question, answer, why):
  """No label maps to a default task index (a -1 would silently index the last task), and no
  empty gold reaches training."""
  import shutil
  import pyarrow as pa
  for name in os.listdir(en_dir):
    shutil.copy(os.path.join(en_dir, name), tmp_path / name)
  path = tmp_path / "align_data_train.arrow"
  table = pa.ipc.open_file(str(path)).read_all()
  tasks = table.column("task").to_pylist()
  texts = table.column("text").to_pylist()
  row = next(r for r, t in enumerate(tasks) if t == "MF")
  user, assistant = json.loads(texts[row])
  tasks[row] = task or tasks[row]
  user["content"] = question or user["content"]
  assistant["content"] = answer if answer is not None else assistant["content"]
  texts[row] = json.dumps([user, assistant])
  table = table.set_column(table.schema.get_field_index("task"), "task", pa.array(tasks))
  table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts))
  with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
    w.write_table(table)
  cfg = pipeline.InputConfig(batch_size=len(tasks), max_len=16, shuffle=False, num_epochs=1,
                                drop_remainder=False)
  with pytest.raises(ValueError, match=f"align_data_train.arrow, row {row}: {why}"):
    next(iter(_ds(str(tmp_path), kind="align", cfg=cfg, tokenizer=tokenizer)))


def test_a_template_that_writes_bos_first_keeps_it_when_the_system_turn_is_cut(tokenizer):
  import copy
  tok = copy.deepcopy(tokenizer)
  tok.bos_token = "<|endoftext|>"
  tok.chat_template = ("{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|im_start|>system\nDefault"
                       "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                       "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
  chat = chat_lib.ChatTokenizer(tok, 64)
  got = chat.render([{"role": "user", "content": "Q?"}], add_generation_prompt=True)
  assert got == "<|endoftext|><|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
  # SmolLM2's own template: its BOS (<|im_start|>) opens every turn, not the document; nothing kept.
  plain = chat_lib.ChatTokenizer(tokenizer, 64).render([{"role": "user", "content": "Q?"}], add_generation_prompt=True)
  assert plain == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"


def _align_cfg(**kw):
  return pipeline.InputConfig(**{**CFG.__dict__, "batch_size": 4, "max_answer_len": 48, **kw})


def test_length_window_reorders_within_windows_keeping_every_row_once(en_dir, tokenizer):
  path = os.path.join(en_dir, "align_data_train.arrow")
  lengths_R = batching.chat_lengths(path)
  f = arrow_io.SequenceFile(path)
  assert [len(f.text(r)) for r in (0, 5)] == lengths_R[[0, 5]].tolist()
  import grain
  plain = grain.MapDataset.range(len(lengths_R)).shuffle(seed=0)
  window, batch = 3, 4
  grouped = batching.LengthGrouped(plain, lengths_R, window=window, batch_size=batch, seed=0)
  span = window * batch
  got = [grouped[i] for i in range(len(plain))]
  for start in range(0, len(plain) - span + 1, span):
    want = sorted(plain[i] for i in range(start, start + span))
    window_rows = got[start:start + span]
    assert sorted(window_rows) == want  # the same rows, each once
    batches = [window_rows[i:i + batch] for i in range(0, span, batch)]
    # Sorted by length, then cut: the batches' length ranges do not interleave.
    ranges = sorted((lengths_R[b].min(), lengths_R[b].max()) for b in batches)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))
  # Batches of similar lengths: the mean spread within a batch shrinks against the plain order.
  spread = lambda rows: np.mean([np.ptp(lengths_R[rows[i:i + batch]]) for i in range(0, len(rows) - batch + 1, batch)])
  assert spread(got) < 0.5 * spread([plain[i] for i in range(len(plain))])
  # grain reads on several threads: any interleaving of reads gives the same rows.
  from concurrent.futures import ThreadPoolExecutor
  import sys
  fresh = batching.LengthGrouped(plain, lengths_R, window=window, batch_size=batch, seed=0)
  order = np.random.default_rng(1).permutation(np.repeat(np.arange(len(plain)), 5))
  interval = sys.getswitchinterval()
  sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes: races show
  try:
    with ThreadPoolExecutor(16) as pool:
      read = list(pool.map(lambda i: (i, fresh[int(i)]), order))
  finally:
    sys.setswitchinterval(interval)
  assert sum(row != got[i] for i, row in read) == 0
  # Through make_dataset the batches are those rows, and resume at the same batch.
  cfg = _align_cfg(length_window=window, seed=0, shuffle=True)
  it = iter(_ds(en_dir, kind="align", cfg=cfg, tokenizer=tokenizer))
  next(it)
  state = it.get_state()
  want = next(it)
  resumed = iter(_ds(en_dir, kind="align", cfg=cfg, tokenizer=tokenizer))
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["input_ids"], want["input_ids"])


def test_widths_cut_only_padding_to_the_first_pair_that_holds_the_batch(en_dir, tokenizer):
  full = list(_ds(en_dir, kind="align", cfg=_align_cfg(shuffle=False, num_epochs=1), tokenizer=tokenizer))
  widths = ((40, 8), (64, 16))
  cut = list(_ds(en_dir, kind="align", cfg=_align_cfg(shuffle=False, num_epochs=1, widths=widths),
                 tokenizer=tokenizer))
  assert len(full) == len(cut) > 0
  seen = set()
  for f, c in zip(full, cut):
    t, a = c["input_ids"].shape[1], c["answer_at"].shape[1]
    text, answer = f["attention_mask"].sum(axis=1).max(), (f["answer_at"] >= 0).sum(axis=1).max()
    assert (t, a) == next((w for w in widths if w[0] >= text and w[1] >= answer), (192, 48))
    seen.add((t, a))
    for k in ("input_ids", "loss_mask", "attention_mask"):
      np.testing.assert_array_equal(c[k], f[k][:, :t])
      assert not f["attention_mask"][:, t:].any() and not f["loss_mask"][:, t:].any()
    np.testing.assert_array_equal(c["answer_at"], f["answer_at"][:, :a])
    assert (f["answer_at"][:, a:] == -1).all()
    np.testing.assert_array_equal(c["task"], f["task"])
  assert len(seen) >= 2, seen  # the data gives batches of more than one width


@pytest.mark.parametrize("widths", [((64, 8), (40, 8)), ((40, 16), (64, 8)), ((0, 8),), ((200, 8),),
                                    ((40, 49),), ((192, 48),), (40,)])
def test_widths_must_be_ascending_pairs_within_the_lengths(widths):
  with pytest.raises(ValueError, match="input.widths"):
    _align_cfg(widths=widths)


def _rechunked(en_dir, tmp_path, rows_per_batch=7):
  """The pretrain-train file (click times included) rewritten in record batches of `rows_per_batch` rows."""
  import pyarrow as pa
  path = os.path.join(en_dir, "pretrain_data_train.arrow")
  table = pa.ipc.open_file(path).read_all()
  out = str(tmp_path / "pretrain_data_train.arrow")
  with pa.ipc.new_file(out, table.schema) as writer:
    for batch in table.to_batches(max_chunksize=rows_per_batch):
      writer.write_batch(batch)
  with open(os.path.join(en_dir, schema.DATASET_INFO), encoding="utf-8") as f:
    (tmp_path / schema.DATASET_INFO).write_text(f.read(), encoding="utf-8")
  return out


@pytest.mark.parametrize("max_len", [3, 16, 400])
def test_a_batch_read_at_once_equals_its_rows_read_one_by_one(en_dir, tmp_path, max_len):
  """`ReadBatch`'s vectorised gathers (rows spread over several record batches, repeated rows,
  -1 padding rows, a short last batch) == `RowToArrays` row by row, stacked."""
  path = _rechunked(en_dir, tmp_path)
  source = pipeline.SequenceSource(path)
  assert len(source.file._batches) > 3 and source.file.has_time  # pylint: disable=protected-access
  cfg = pipeline.InputConfig(max_len=max_len)
  rows = np.random.default_rng(0).integers(0, len(source), 10)
  indices = np.concatenate([rows, [rows[0], -1]])
  got = pipeline.ReadBatch(source, cfg, batch_size=16).map(indices)
  one = pipeline.RowToArrays(cfg, path)
  want = [one.map(source[i] if i >= 0 else dict(source[0], _padding=True)) for i in indices]
  assert set(got) == set(want[0])
  for key in want[0]:
    assert got[key].shape == (16, *np.shape(want[0][key])) and got[key].dtype == np.asarray(want[0][key]).dtype, key
    np.testing.assert_array_equal(got[key][:len(indices)], np.stack([w[key] for w in want]), err_msg=key)
    assert not got[key][len(indices):].any(), key  # the short batch's completion: zero rows
  assert list(got["valid"]) == [True] * 11 + [False] * 5
