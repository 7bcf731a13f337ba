"""Encoder properties: causality, padding invariance, scan == recurrence, HSTU == its formula."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uqa_jax import encoders
from uqa_jax.encoders import common
from uqa_jax.encoders import gru4rec
from uqa_jax.encoders import hstu
from uqa_jax.encoders import mamba4rec
from uqa_jax.encoders.config import EncoderConfig

B, L, D = 2, 12, 32


def _setup(name, length=L):
  cfg = EncoderConfig(name=name, d_model=D, num_layers=2, num_heads=4, max_len=32, d_state=4,
                      dropout=0.1)
  model = encoders.get(name)(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, length, D))
  mask = jnp.ones((B, length), jnp.int32).at[1, 9:].set(0)
  params = model.init(jax.random.PRNGKey(0), x, mask)
  return model, params, x, mask


@pytest.mark.parametrize("name", encoders.NAMES)
def test_changing_step_t_plus_1_leaves_outputs_up_to_t_unchanged(name):
  model, params, x, mask = _setup(name)
  t = 5
  x2 = x.at[:, t + 1:].set(jax.random.normal(jax.random.PRNGKey(7), x[:, t + 1:].shape))
  y1, y2 = model.apply(params, x, mask), model.apply(params, x2, mask)
  np.testing.assert_allclose(y1[:, :t + 1], y2[:, :t + 1], atol=1e-5)
  assert not np.allclose(y1[:, t + 1:], y2[:, t + 1:], atol=1e-3)  # the change does propagate


@pytest.mark.parametrize("name", encoders.NAMES)
def test_appending_clicks_after_t_leaves_outputs_up_to_t_unchanged(name):
  """Not only their values: how many clicks come later must not matter either (HSTU's 1/n)."""
  model, params, x, _ = _setup(name)
  t = 5
  short = jnp.zeros((B, L), jnp.int32).at[:, :t + 1].set(1)
  longer = jnp.zeros((B, L), jnp.int32).at[:, :t + 4].set(1)
  y_short, y_long = model.apply(params, x, short), model.apply(params, x, longer)
  np.testing.assert_allclose(y_short[:, :t + 1], y_long[:, :t + 1], atol=1e-5)


@pytest.mark.parametrize("name", encoders.NAMES)
def test_extra_right_padding_changes_nothing_at_valid_positions(name):
  model, params, x, mask = _setup(name)
  padded_x = jnp.concatenate([x, jnp.full((B, 4, D), 3.0)], axis=1)
  padded_mask = jnp.concatenate([mask, jnp.zeros((B, 4), jnp.int32)], axis=1)
  y = model.apply(params, x, mask)
  y_pad = model.apply(params, padded_x, padded_mask)
  valid = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(y_pad[:, :L])[valid], np.asarray(y)[valid], atol=1e-5)


@pytest.mark.parametrize("name", encoders.NAMES)
def test_dropout_acts_only_in_training(name):
  model, params, x, mask = _setup(name)
  eval1, eval2 = model.apply(params, x, mask), model.apply(params, x, mask)
  np.testing.assert_array_equal(eval1, eval2)
  train = model.apply(params, x, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
  assert not np.allclose(train, eval1)


def test_unknown_encoder_lists_the_choices():
  with pytest.raises(ValueError, match="expected one of gru4rec, sasrec, mamba4rec, hstu, trmpp"):
    encoders.get("bert4rec")


def test_associative_scan_equals_sequential_recurrence_with_gradients():
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.nn.sigmoid(jax.random.normal(key_a, (2, 37, 3, 4)))
  b = jax.random.normal(key_b, (2, 37, 3, 4))
  np.testing.assert_allclose(mamba4rec.selective_scan(a, b), mamba4rec.sequential_scan(a, b),
                             rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b)))
  ga = jax.grad(loss(mamba4rec.selective_scan), argnums=(0, 1))(a, b)
  gs = jax.grad(loss(mamba4rec.sequential_scan), argnums=(0, 1))(a, b)
  for x, y in zip(ga, gs):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_padding_is_the_identity_of_the_scan():
  a = jnp.full((1, 6, 1, 1), 0.5).at[:, 3:].set(1.0)
  b = jnp.ones((1, 6, 1, 1)).at[:, 3:].set(0.0)
  h = mamba4rec.selective_scan(a, b)[0, :, 0, 0]
  np.testing.assert_allclose(h, [1.0, 1.5, 1.75, 1.75, 1.75, 1.75])


@pytest.mark.parametrize("impl", ["xla", pytest.param("pallas", marks=pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="head dim 8 < 16, Triton's smallest dot: tests/unit/encoders/test_hstu_pallas.py"))])
@pytest.mark.parametrize("with_time", [False, True])
def test_hstu_layer_equals_a_plain_jnp_reference(with_time, impl):
  """Both attention paths (the jnp reference and the fused Pallas kernel, interpret mode on CPU)
  against a NumPy loop over every (batch, head, query, key)."""
  cfg = EncoderConfig(name="hstu", d_model=D, num_layers=1, num_heads=4, max_len=32, dropout=0.0,
                      time_buckets=20, attention_impl=impl)
  block = hstu.Block(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, L, D))
  mask = jnp.ones((B, L), jnp.int32).at[1, 8:].set(0)
  rng = np.random.default_rng(0)
  times = np.cumsum(rng.exponential(5_000.0, size=(B, L)), axis=1).astype(np.int32)
  stamps = jnp.asarray(times) if with_time else None
  params = block.init(jax.random.PRNGKey(0), x, mask, stamps, None, True)
  p = jax.tree.map(np.asarray, jax.tree.map(lambda v: v.value if hasattr(v, "value") else v,
                                            params["params"], is_leaf=lambda v: hasattr(v, "value")))
  p["rab"] = rng.normal(size=p["rab"].shape)
  if with_time:
    p["time_rab"] = rng.normal(size=p["time_rab"].shape)
  got, _ = block.apply({"params": p}, x, mask, stamps, None, True)

  def time_bias(hi, bi, i, j):
    if not with_time:
      return 0.0
    gap = max(abs(int(times[bi, i]) - int(times[bi, j])), 1)
    return p["time_rab"][hi, min(int(np.floor(np.log(gap) / 0.301)), cfg.time_buckets - 1)]

  def layer_norm(v, scale, bias, eps=1e-6):
    mu = v.mean(-1, keepdims=True)
    var = ((v - mu) ** 2).mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(var + eps) * scale + bias

  silu = lambda v: v / (1 + np.exp(-v))
  xn = np.asarray(x)
  y = layer_norm(xn, p["in_norm"]["scale"], p["in_norm"]["bias"])
  u, v, q, k = np.split(silu(y @ p["uvqk"]["kernel"] + p["uvqk"]["bias"]), 4, axis=-1)
  h, e = 4, D // 4
  out = np.zeros_like(xn)
  for bi in range(B):
    n = cfg.max_len  # the reference's padded length, not the row's valid steps
    av = np.zeros((L, D))
    for hi in range(h):
      sl = slice(hi * e, (hi + 1) * e)
      for i in range(L):
        for j in range(L):
          if j <= i and mask[bi, j]:
            bias = p["rab"][hi, min(i - j, cfg.max_len - 1)] + time_bias(hi, bi, i, j)
            a = silu(q[bi, i, sl] @ k[bi, j, sl] + bias) / n
            av[i, sl] += a * v[bi, j, sl]
    gated = u[bi] * layer_norm(av, p["av_norm"]["scale"], p["av_norm"]["bias"])
    out[bi] = xn[bi] + gated @ p["o"]["kernel"] + p["o"]["bias"]
  np.testing.assert_allclose(np.asarray(got), out, rtol=1e-4, atol=1e-4)


def test_hstu_time_bias_is_causal_and_used():
  cfg = EncoderConfig(name="hstu", d_model=D, num_layers=2, num_heads=4, max_len=32, dropout=0.0)
  model = hstu.Model(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, L, D))
  mask = jnp.ones((B, L), jnp.int32).at[1, 9:].set(0)
  times = jnp.asarray(np.cumsum(np.random.default_rng(1).exponential(3_600.0, (B, L)), 1).astype(np.int32))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), x, mask, True, times))
  layers = params["params"]["layers"]
  assert layers["time_rab"].shape == (2, 4, cfg.time_buckets)  # per layer, head, bucket
  layers["time_rab"] = jax.random.normal(jax.random.PRNGKey(2), layers["time_rab"].shape)
  t = 5
  later = times.at[:, t + 1:].add(1_000_000)
  y1, y2 = model.apply(params, x, mask, True, times), model.apply(params, x, mask, True, later)
  np.testing.assert_allclose(y1[:, :t + 1], y2[:, :t + 1], atol=1e-5)  # later times: no effect before
  assert not np.allclose(y1[:, t + 1:], y2[:, t + 1:], atol=1e-3)  # ... but they are used
  assert not np.allclose(y1, model.apply(params, x, mask, True), atol=1e-3)  # time bias vs none


def test_remat_changes_memory_not_results():
  model, params, x, mask = _setup("trmpp")
  cfg = EncoderConfig(name="trmpp", d_model=D, num_layers=2, num_heads=4, max_len=32, dropout=0.1, remat=True)
  remat_model = encoders.get("trmpp")(cfg)
  loss = lambda m: lambda p: jnp.sum(m.apply(p, x, mask, False, rngs={"dropout": jax.random.PRNGKey(5)}) ** 2)
  v1, g1 = jax.value_and_grad(loss(model))(params)
  v2, g2 = jax.value_and_grad(loss(remat_model))(params)
  np.testing.assert_allclose(v1, v2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_causal_conv_equals_a_grouped_lax_convolution():
  cfg = EncoderConfig(name="mamba4rec", d_model=4, d_conv=4)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 9, 8))
  conv = mamba4rec.CausalConv(cfg)
  params = conv.init(jax.random.PRNGKey(4), x)
  params = jax.tree.map(lambda p: p + 0.3, nn.unbox(params))  # a non-zero bias too
  w_KxI, bias_I = params["params"]["kernel"], params["params"]["bias"]
  reference = jax.lax.conv_general_dilated(
      x, w_KxI[:, None, :], window_strides=(1,), padding=((3, 0),),
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=8) + bias_I
  np.testing.assert_allclose(conv.apply(params, x), reference, rtol=1e-5, atol=1e-6)


def test_causal_conv_kernel_is_initialised_by_its_fan_in():
  """Each output channel sums d_conv inputs, so the kernel's std is 1/sqrt(d_conv) (as nn.Conv's)."""
  conv = mamba4rec.CausalConv(EncoderConfig(d_conv=4))
  kernel = nn.unbox(conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 1024))))["params"]["kernel"]
  assert kernel.shape == (4, 1024)
  np.testing.assert_allclose(np.std(kernel), 0.5, rtol=0.05)


def test_gru_layer_equals_flax_gru_cell_with_the_same_weights():
  cfg = EncoderConfig(name="gru4rec", d_model=8)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 8))
  ours = gru4rec.GRULayer(cfg)
  params = nn.unbox(ours.init(jax.random.PRNGKey(0), x))["params"]
  params["input"]["bias"] = jax.random.normal(jax.random.PRNGKey(2), (24,))
  params["hidden_bias"] = jax.random.normal(jax.random.PRNGKey(3), (8,))
  reference = nn.RNN(nn.GRUCell(features=8))
  split = lambda w: jnp.split(w, 3, axis=-1)
  ir, iz, i_n = split(params["input"]["kernel"])
  bir, biz, bin_ = split(params["input"]["bias"])
  hr, hz, hn = split(params["hidden_kernel"])
  ref_params = {"cell": {"ir": {"kernel": ir, "bias": bir}, "iz": {"kernel": iz, "bias": biz},
                         "in": {"kernel": i_n, "bias": bin_}, "hr": {"kernel": hr}, "hz": {"kernel": hz},
                         "hn": {"kernel": hn, "bias": params["hidden_bias"]}}}
  assert jax.tree.structure(ref_params) == jax.tree.structure(reference.init(jax.random.PRNGKey(0), x)["params"])
  np.testing.assert_allclose(ours.apply({"params": params}, x), reference.apply({"params": ref_params}, x),
                             rtol=1e-5, atol=1e-6)


class _RecordingConfig(EncoderConfig):
  """EncoderConfig that records which fields are read (identity eq/hash: flax must not read all)."""
  reads: set = set()

  def __getattribute__(self, name):
    if name in EncoderConfig.__dataclass_fields__:
      _RecordingConfig.reads.add(name)
    return super().__getattribute__(name)

  __eq__ = object.__eq__
  __hash__ = object.__hash__


@pytest.mark.parametrize("name", encoders.NAMES)
def test_each_encoder_reads_exactly_the_fields_it_declares(name):
  """`READS` decides which settings are fingerprinted and which are refused as dead: it must be exact."""
  from uqa_jax.encoders import config as encoder_config
  from uqa_jax.encoders.user_model import UserModel
  cfg = _RecordingConfig(name=name, d_model=8, num_layers=1, num_heads=2, max_len=16, d_state=4)
  vocab = {"item": 50, "cate": 9, "brand": 9, "shop": 9, "seller": 9, "bpe": 30}
  model = UserModel(cfg, vocab, {t: 4 for t in vocab})
  batch = {c: jnp.ones((2, 6, 2), jnp.int32) for c in
           ("uni_seq_cate_id", "uni_seq_brand_id", "uni_seq_shop_id", "uni_seq_seller_id",
            "uni_seq_title_bpe_token_ids", "uni_seq_cate_bpe_token_ids", "uni_seq_shop_bpe_token_ids",
            "uni_seq_brand_bpe_token_ids", "uni_seq_seller_bpe_token_ids")}
  batch.update(uni_seq_item_id=jnp.ones((2, 6), jnp.int32), lengths=jnp.array([6, 3]),
               timestamps=jnp.arange(12, dtype=jnp.int32).reshape(2, 6) * 100)
  _RecordingConfig.reads = set()
  params = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, batch)
  model.apply(params, batch, False, rngs={"dropout": jax.random.PRNGKey(2)})
  read = _RecordingConfig.reads
  assert read - set(encoder_config.COMMON) == set(encoders.reads(name)), sorted(read)


def test_a_setting_the_encoder_ignores_is_refused():
  from uqa_jax.encoders import config as encoder_config
  encoder_config.check_reads(EncoderConfig(name="gru4rec", num_layers=3), encoders.reads("gru4rec"))
  with pytest.raises(ValueError, match=r"num_heads=4: not read by gru4rec"):
    encoder_config.check_reads(EncoderConfig(name="gru4rec", num_heads=4), encoders.reads("gru4rec"))


def test_mamba_dt_starts_log_uniform_in_mamba1_range():
  """softplus(b_Δ) = Δ₀ in [1e-3, 0.1], spread on a log scale (not softplus(0) ≈ 0.69 everywhere)."""
  cfg = EncoderConfig(name="mamba4rec", d_model=64, num_layers=1, d_state=4, max_len=32, dropout=0.0)
  x = jnp.zeros((1, 4, 64))
  params = mamba4rec.Block(cfg).init(jax.random.PRNGKey(0), x, jnp.ones((1, 4)), True)["params"]
  bias = np.asarray(nn.unbox(params["dt_proj"]["bias"]))
  dt = np.log1p(np.exp(bias))
  assert dt.shape == (128,) and dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
  assert np.mean(dt < 0.01) > 0.3 and np.mean(dt > 0.01) > 0.3  # log-uniform: half below 10^-2
  bound = np.ceil(64 / 16) ** -0.5
  kernel = np.asarray(nn.unbox(params["dt_proj"]["kernel"]))
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound


def _np_mamba_block(p, x_LxD, d_conv, eps=1e-6):
  """One Mamba4Rec block on one unpadded sequence, step by step in float64 (no scan, no jnp)."""
  f = lambda v: np.asarray(v, np.float64)
  silu = lambda v: v / (1 + np.exp(-v))
  softplus = lambda v: np.log1p(np.exp(v))
  gelu = lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))

  def layer_norm(v, q):
    mu = v.mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(((v - mu) ** 2).mean(-1, keepdims=True) + eps) * f(q["scale"]) + f(q["bias"])

  length = x_LxD.shape[0]
  xz = x_LxD @ f(p["in_proj"]["kernel"])
  inner = xz.shape[1] // 2
  xs, z = xz[:, :inner], xz[:, inner:]
  w = f(p["conv"]["kernel"])
  conv = np.zeros_like(xs)
  for t in range(length):
    conv[t] = f(p["conv"]["bias"])
    for k in range(d_conv):
      src = t - (d_conv - 1) + k
      if src >= 0:
        conv[t] += w[k] * xs[src]
  u = silu(conv)
  n = f(p["A_log"]).shape[1]
  dbc = u @ f(p["x_proj"]["kernel"])
  rank = dbc.shape[1] - 2 * n
  dt = softplus(dbc[:, :rank] @ f(p["dt_proj"]["kernel"]) + f(p["dt_proj"]["bias"]))
  a = -np.exp(f(p["A_log"]))
  h = np.zeros((inner, n))
  y = np.zeros((length, inner))
  for t in range(length):
    b_t, c_t = dbc[t, rank:rank + n], dbc[t, rank + n:]
    h = np.exp(dt[t][:, None] * a) * h + dt[t][:, None] * b_t[None, :] * u[t][:, None]
    y[t] = h @ c_t + f(p["D"]) * u[t]
  y = y * silu(z)
  x = layer_norm(x_LxD + y @ f(p["out_proj"]["kernel"]), p["ssm_norm"])
  ff = gelu(x @ f(p["ff1"]["kernel"]) + f(p["ff1"]["bias"])) @ f(p["ff2"]["kernel"]) + f(p["ff2"]["bias"])
  return layer_norm(x + ff, p["ff_norm"])


# auto on CPU is sequential; the associative scan is checked against it directly (above), so
# its whole-block run here is slow
@pytest.mark.parametrize("scan_impl", [pytest.param("associative", marks=pytest.mark.slow), "sequential"])
def test_whole_mamba_block_with_padding_equals_a_sequential_numpy_reference(scan_impl):
  cfg = EncoderConfig(name="mamba4rec", d_model=D, num_layers=1, d_state=4, max_len=32, dropout=0.0,
                      scan_impl=scan_impl)
  block = mamba4rec.Block(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, L, D))
  lengths = [L, 7]
  mask = jnp.ones((B, L), jnp.int32).at[1, 7:].set(0)
  x = x.at[1, 7:].set(5.0)  # garbage in the padding must not leak into valid steps
  params = nn.unbox(block.init(jax.random.PRNGKey(0), x, mask, True)["params"])
  rng = np.random.default_rng(0)
  params["D"] = rng.normal(size=params["D"].shape).astype(np.float32)  # not all ones
  params["conv"]["bias"] = rng.normal(size=params["conv"]["bias"].shape).astype(np.float32) * 0.1
  got, _ = block.apply({"params": params}, x, mask, True)
  for b, n in enumerate(lengths):
    want = _np_mamba_block(params, np.asarray(x[b, :n], np.float64), cfg.d_conv)
    np.testing.assert_allclose(np.asarray(got[b, :n]), want, atol=1e-5, rtol=1e-5)


def test_scan_impl_resolves_per_platform():
  auto = mamba4rec.sequential_scan if jax.default_backend() == "cpu" else mamba4rec.selective_scan
  assert mamba4rec.scan_fn(EncoderConfig(name="mamba4rec")) is auto
  assert mamba4rec.scan_fn(EncoderConfig(name="mamba4rec", scan_impl="associative")) is mamba4rec.selective_scan
  with pytest.raises(ValueError, match="scan_impl='tree': expected auto, associative, sequential"):
    mamba4rec.scan_fn(EncoderConfig(name="mamba4rec", scan_impl="tree"))


def test_attention_impl_resolves_per_platform_and_refuses_what_an_encoder_lacks():
  for name in ("trmpp", "sasrec", "hstu"):
    assert common.attention_impl(EncoderConfig(name=name)) == "xla"  # auto in float32, every platform
  bf16 = "cudnn" if jax.default_backend() == "gpu" else "xla"
  assert common.attention_impl(EncoderConfig(name="trmpp", dtype="bfloat16")) == bf16
  assert common.attention_impl(EncoderConfig(name="hstu", dtype="bfloat16")) == "xla"
  assert common.attention_impl(EncoderConfig(name="hstu", attention_impl="pallas")) == "pallas"
  with pytest.raises(ValueError, match="trmpp offers auto, xla, cudnn"):
    common.attention_impl(EncoderConfig(name="trmpp", attention_impl="pallas"))
  with pytest.raises(ValueError, match="hstu offers auto, xla, pallas"):
    common.attention_impl(EncoderConfig(name="hstu", attention_impl="flash"))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU (benchmarks/gpu_check.sh)")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cudnn_attention_equals_the_xla_path(dtype):
  """Ragged lengths (right padding): valid rows of cuDNN's kernel equal XLA's, forward and gradients."""
  b, length, h, e = 2, 256, 4, 64
  ks = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, cot = (jax.random.normal(x, (b, length, h, e)).astype(dtype) for x in ks)
  lengths = jnp.array([length, 100])
  valid = (jnp.arange(length)[None] < lengths[:, None])[:, :, None, None]

  def run(impl):
    f = lambda q, k, v: jnp.sum((common.causal_attention(q, k, v, lengths, impl) * cot * valid).astype(jnp.float32))
    return common.causal_attention(q, k, v, lengths, impl), jax.grad(f, argnums=(0, 1, 2))(q, k, v)

  (out_x, g_x), (out_c, g_c) = run("xla"), run("cudnn")
  np.testing.assert_allclose(np.asarray(out_c * valid, np.float32), np.asarray(out_x * valid, np.float32), atol=2e-2)
  for a, c in zip(g_c, g_x):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(c, np.float32), atol=5e-2)
