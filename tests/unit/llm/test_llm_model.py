"""The Flax decoder against transformers' PyTorch Qwen2/Llama: logits, export, generation."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests import llm_reference as ref
from uqa_jax.llm import generate
from uqa_jax.llm import model as model_lib
from uqa_jax.llm import weights

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CASES = [("qwen2", False), ("qwen2", True), ("llama", True), ("llama", False)]


def _ids_and_mask(seed=0, batch=3, length=12):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, ref.TINY["vocab_size"], size=(batch, length))
  mask = np.ones((batch, length), np.int32)
  mask[1, :4] = 0  # left padding
  mask[2, :1] = 0
  return ids, mask


def _ours(cfg, params, ids, mask):
  logits, _ = model_lib.Decoder(cfg).apply(
      {"params": params}, jnp.asarray(ids), positions=model_lib.positions_from_mask(jnp.asarray(mask)),
      kv_mask=jnp.asarray(mask))
  return np.asarray(logits)


def _rel_err(a, b, mask):
  valid = mask.astype(bool)
  return np.abs(a - b)[valid].max() / np.abs(b[valid]).max()


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in CASES])
def checkpoint(request, tmp_path_factory):
  arch, tie = request.param
  path = tmp_path_factory.mktemp(f"{arch}-{tie}")
  model = ref.tiny_checkpoint(str(path), arch, tie)
  cfg, params = weights.load_hf(str(path))
  return model, cfg, params, str(path)


def test_logits_match_transformers_with_and_without_padding(checkpoint):
  model, cfg, params, _ = checkpoint
  ids, mask = _ids_and_mask()
  assert _rel_err(_ours(cfg, params, ids, mask), ref.torch_logits(model, ids, mask), mask) < 1e-4
  full = np.ones_like(mask)
  assert _rel_err(_ours(cfg, params, ids, full), ref.torch_logits(model, ids, full), full) < 1e-4


def test_exported_directory_loads_back_into_transformers(checkpoint, tmp_path):
  model, cfg, params, _ = checkpoint
  weights.save_hf(str(tmp_path), cfg, params)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  ids, mask = _ids_and_mask(seed=1)
  np.testing.assert_allclose(ref.torch_logits(reloaded, ids, mask), ref.torch_logits(model, ids, mask),
                             rtol=1e-5, atol=1e-5)
  cfg2, params2 = weights.load_hf(str(tmp_path))
  assert cfg2 == cfg


def _hf_greedy(model, prompts, n, pad_id):
  width = max(map(len, prompts))
  ids = np.full((len(prompts), width), pad_id)
  mask = np.zeros_like(ids)
  for b, p in enumerate(prompts):
    ids[b, width - len(p):] = p
    mask[b, width - len(p):] = 1
  with torch.no_grad():
    out = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=n,
                         min_new_tokens=n, do_sample=False, pad_token_id=pad_id, eos_token_id=None)
  return out[:, width:].numpy().tolist()


PROMPTS = [[5, 17, 99, 3], [42], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 1], [100, 2, 64]]


def test_greedy_generation_equals_transformers_generate(checkpoint):
  model, cfg, params, _ = checkpoint
  gen = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  ours = gen.generate(PROMPTS, generate.SamplingConfig(max_new_tokens=10))
  assert ours == _hf_greedy(model, PROMPTS, 10, pad_id=0)


def test_generation_with_cache_equals_without(checkpoint):
  _, cfg, params, _ = checkpoint
  gen = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  sampling = generate.SamplingConfig(max_new_tokens=8)
  assert gen.generate(PROMPTS, sampling) == gen.generate(PROMPTS, sampling, use_cache=False)


def test_soft_prompt_equals_the_tokens_it_embeds(checkpoint):
  """A soft prefix built from token embeddings behaves exactly like those tokens."""
  _, cfg, params, _ = checkpoint
  gen = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  prefix = [11, 12, 13]
  soft = np.asarray(params["embedding"])[prefix][None].repeat(len(PROMPTS), 0)
  sampling = generate.SamplingConfig(max_new_tokens=6)
  with_soft = gen.generate(PROMPTS, sampling, soft_prompt_BxPxD=soft)
  assert with_soft == gen.generate([prefix + p for p in PROMPTS], sampling)


def test_stops_at_eos_and_sampling_is_seeded(checkpoint):
  _, cfg, params, _ = checkpoint
  greedy = generate.Generator(cfg, params, eos_ids=(), pad_id=0).generate(
      PROMPTS, generate.SamplingConfig(max_new_tokens=6))
  stop = greedy[0][2]
  stopped = generate.Generator(cfg, params, eos_ids=(stop,), pad_id=0).generate(
      PROMPTS[:1], generate.SamplingConfig(max_new_tokens=6))
  assert stopped == [greedy[0][:greedy[0].index(stop)]]
  gen = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  hot = generate.SamplingConfig(max_new_tokens=8, temperature=1.5, top_p=0.9, seed=3)
  assert gen.generate(PROMPTS, hot) == gen.generate(PROMPTS, hot)


def test_bfloat16_compute_stays_close_to_float32(checkpoint):
  _, cfg, params, _ = checkpoint
  ids, mask = _ids_and_mask(seed=2)
  full = _ours(cfg, params, ids, mask)
  half = _ours(cfg.replace(dtype="bfloat16"), params, ids, mask)
  assert half.dtype == np.float32  # logits are always float32
  assert _rel_err(half, full, mask) < 5e-2


def test_decoder_rejects_both_or_neither_input(checkpoint):
  _, cfg, params, _ = checkpoint
  ids, mask = _ids_and_mask()
  with pytest.raises(ValueError, match="exactly one of tokens"):
    model_lib.Decoder(cfg).apply({"params": params}, positions=jnp.asarray(mask), kv_mask=jnp.asarray(mask))


def test_grouped_query_attention_equals_a_numpy_reference():
  """`attend` == softmax(q k^T / sqrt(E)) v per query head, head h reading kv head h // G, masked."""
  rng = np.random.default_rng(0)
  b, t, s, h, kv, e = 2, 5, 7, 6, 2, 4
  q, k, v = (rng.normal(size=shape).astype(np.float32) for shape in ((b, t, h, e), (b, s, kv, e), (b, s, kv, e)))
  mask = rng.random((b, 1, t, s)) < 0.6
  mask[..., 0] = True  # every query sees at least one key
  got = np.asarray(model_lib.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
  want = np.zeros((b, t, h, e))
  for bi in range(b):
    for hi in range(h):
      scores = q[bi, :, hi].astype(np.float64) @ k[bi, :, hi // (h // kv)].T / np.sqrt(e)
      scores = np.where(mask[bi, 0], scores, -np.inf)
      p = np.exp(scores - scores.max(-1, keepdims=True))
      want[bi, :, hi] = (p / p.sum(-1, keepdims=True)) @ v[bi, :, hi // (h // kv)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_soft_tokens_at_an_index_equal_the_tokens_they_embed_there(checkpoint):
  _, cfg, params, _ = checkpoint
  gen = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  middle = [21, 22]
  soft = np.asarray(params["embedding"])[middle][None].repeat(len(PROMPTS), 0)
  at = [min(2, len(p)) for p in PROMPTS]
  sampling = generate.SamplingConfig(max_new_tokens=6)
  with_soft = gen.generate(PROMPTS, sampling, soft_prompt_BxPxD=soft, soft_at=at)
  assert with_soft == gen.generate([p[:a] + middle + p[a:] for p, a in zip(PROMPTS, at)], sampling)


def test_continuation_nll_equals_transformers_on_the_whole_sequence(checkpoint):
  """Each candidate's NLL after a cached prompt, against PyTorch on prompt + candidate."""
  model, cfg, params, _ = checkpoint
  gen = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  continuations = [[[5, 6, 7], [8]], [[9, 10]], [[11], [12, 13, 14, 15], [16, 17]], [[3, 3]]]
  ours = gen.continuation_nll(PROMPTS, continuations, length=6)
  for prompt, cands, got in zip(PROMPTS, continuations, ours):
    assert len(got) == len(cands)
    for cand, (nll, count) in zip(cands, got):
      ids = torch.tensor([prompt + cand])
      with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1).numpy()
      want = -sum(logp[len(prompt) - 1 + j, tok] for j, tok in enumerate(cand))
      assert count == len(cand) and nll == pytest.approx(want, rel=1e-4)


# the bucketing and the shared cache do not depend on the architecture: one qwen2 and one llama
# case, tied and untied once each (the module's other tests run all four against transformers)
@pytest.mark.parametrize("checkpoint", [CASES[1], CASES[3]], indirect=True,
                         ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in (CASES[1], CASES[3])])
def test_fixed_shapes_and_a_shared_prefill_change_no_number(checkpoint):
  """With fixed shapes (2 prompt buckets, a cache of the largest + room, 2 answer buckets) the
  candidates scored on the prefill generation then decodes from equal the one-off results, and
  so does the generation."""
  _, cfg, params, _ = checkpoint
  plain = generate.Generator(cfg, params, eos_ids=(), pad_id=0)
  shapes = generate.Shapes.fit([len(p) for p in PROMPTS], 2, new_tokens=6, answer_lengths=[2, 4])
  assert len(shapes.buckets) == 2 and shapes.answer_buckets == (8,) and shapes.cache_len == shapes.buckets[-1] + 8
  fixed = generate.Generator(cfg, params, eos_ids=(), pad_id=0, shapes=shapes)
  continuations = [[[5, 6, 7], [8]], [[9, 10]], [[11], [12, 13, 14, 15], [16, 17]], [[3, 3]]]
  sampling = generate.SamplingConfig(max_new_tokens=6)
  for batch in (PROMPTS[:2], PROMPTS[2:]):  # one bucket each
    conts = continuations[:2] if batch == PROMPTS[:2] else continuations[2:]
    state = fixed.prefill(batch, new_tokens=6)
    shared = fixed.continuation_nll(batch, conts, state=state)
    for got, want in zip(shared, plain.continuation_nll(batch, conts)):
      assert [c for _, c in got] == [c for _, c in want]
      np.testing.assert_allclose([s for s, _ in got], [s for s, _ in want], rtol=1e-5)
    out = fixed.decode(state, sampling)
    assert [list(r) for r in out] == plain.generate(batch, sampling)
  with pytest.raises(ValueError, match="longer than the largest bucket"):
    fixed.prefill([[1] * (shapes.buckets[-1] + 1)])
