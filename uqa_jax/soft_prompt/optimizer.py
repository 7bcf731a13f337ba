"""Stage 2's optimizer: AdamW with one learning rate per trainable group (adapter, llm, encoder).

`LR_OF` names the `align` field that sets each group's rate during the QA steps (after
`align.reconstruct_steps`, whose rate is `align.reconstruct_learning_rate`, the LLM's 0); the LLM's
schedule starts after `align.llm_frozen_steps` more and, with `align.llm_steps`, spans that many
steps, after which its rate is 0 (the adapter goes on alone). While its rate is 0 by phase
(`llm_frozen`), its gradients are zeroed before the clip, the step does not compute them, and its
Adam moments and step count wait (its phase starts as a fresh Adam).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from uqa_jax.config import blocks
from uqa_jax.config.recipes import AlignConfig

LR_OF = {"adapter": "learning_rate", "encoder": "learning_rate", "llm": "llm_learning_rate"}


def check_timing(a: AlignConfig, total_steps: int) -> None:
  """The phases fit the run's length (known once the data is read): ConfigError naming the key."""
  qa_start = a.reconstruct_steps  # the QA steps (and their warm-up) follow the reconstruction steps
  llm_start = qa_start + a.llm_frozen_steps
  if a.llm_frozen_steps and (llm_start + (a.warmup_steps if a.schedule == "warmup_cosine" else 0)) >= total_steps:
    raise blocks.ConfigError(f"config align.llm_frozen_steps={a.llm_frozen_steps}: with the LLM's warm-up "
                             f"it leaves no step of the run's {total_steps} for the LLM to train")
  if a.llm_steps and llm_start + a.llm_steps >= total_steps:
    after = f" after reconstruct_steps={qa_start}" if qa_start else ""
    raise blocks.ConfigError(f"config align.llm_steps={a.llm_steps}: with llm_frozen_steps={a.llm_frozen_steps}{after} "
                             f"it reaches the run's end ({total_steps} steps), so the LLM is never frozen; use 0")
  if a.schedule == "warmup_cosine" and qa_start + a.warmup_steps >= total_steps:
    raise blocks.ConfigError(f"config align.warmup_steps={a.warmup_steps}: not below the run's "
                             f"{total_steps - qa_start}{' QA' if qa_start else ''} steps; lower it or use align.schedule='constant'")


def make_optimizer(a: AlignConfig, total_steps: int):
  """AdamW with one learning rate per trainable group, after clipping the global gradient norm.

  Built as clip -> Adam moments -> decoupled weight decay -> per-group rate (what `optax.adamw`
  chains, with the last link per group). The optimizer state then holds only arrays shaped
  like the parameters (no `optax.multi_transform` masks), which Orbax saves and restores as is.
  A trained LLM with frozen phases gets a first link that zeroes its gradients in them and Adam
  per group, the LLM's held in them (`adam_per_group`).
  """
  frozen = llm_frozen(a, total_steps)
  adam = optax.scale_by_adam(b1=a.betas[0], b2=a.betas[1])
  if frozen:  # the LLM's gradients zeroed before the clip, its Adam held while it is
    return optax.chain(zero_while(frozen, ("llm",)), optax.clip_by_global_norm(a.grad_clip),
                       adam_per_group(adam, frozen, "llm"), optax.add_decayed_weights(a.weight_decay),
                       scale_by_group_schedule(schedules(a, total_steps)))
  return optax.chain(optax.clip_by_global_norm(a.grad_clip), adam, optax.add_decayed_weights(a.weight_decay),
                     scale_by_group_schedule(schedules(a, total_steps)))


def llm_frozen(a: AlignConfig, total_steps: int):
  """applied updates -> whether the LLM's phase holds it (its rate 0: the reconstruction steps,
  `llm_frozen_steps`, after `llm_steps`), as a boolean array; None when the LLM does not train or
  trains in every step."""
  if not holds_llm(a):
    return None
  start = a.reconstruct_steps + a.llm_frozen_steps
  end = start + a.llm_steps if a.llm_steps else total_steps
  return lambda count: (count < start) | (count >= end)


def holds_llm(a: AlignConfig) -> bool:
  """Whether a trained LLM has phases that hold it (then the step and the optimizer treat it apart)."""
  return "llm" in a.trainable() and bool(a.reconstruct_steps or a.llm_frozen_steps or a.llm_steps)


def zero_while(frozen, groups: tuple[str, ...]) -> optax.GradientTransformation:
  """The `groups`' gradients zeroed in the updates where `frozen(count)` holds: a frozen LLM does
  not count in the global-norm clip (the adapter's updates are as if it were alone)."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    off = frozen(state.count)
    out = {g: jax.tree.map(lambda u: jnp.where(off, jnp.zeros_like(u), u), sub) if g in groups else sub
           for g, sub in updates.items()}
    return out, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


class GroupAdamState(NamedTuple):
  count: jax.Array  # updates so far (the phases' clock)
  adam: dict  # group -> optax.ScaleByAdamState (its own moments and step count)


def adam_per_group(adam: optax.GradientTransformation, frozen, group: str) -> optax.GradientTransformation:
  """`adam` per parameter group, `group`'s moments and step count held where `frozen(count)`:
  when its phase starts, its first update is a fresh Adam's (bias correction from its own first
  step, not the run's), and after its phase its moments stay as they were."""
  def init(params):
    return GroupAdamState(count=jnp.zeros([], jnp.int32), adam={g: adam.init(sub) for g, sub in params.items()})

  def update(updates, state, params=None):
    off = frozen(state.count)
    out, new = {}, {}
    for g, sub in updates.items():
      out[g], new[g] = adam.update(sub, state.adam[g], None if params is None else params[g])
      if g == group:
        out[g] = jax.tree.map(lambda u: jnp.where(off, jnp.zeros_like(u), u), out[g])
        new[g] = jax.tree.map(lambda n, o: jnp.where(off, o, n), new[g], state.adam[g])
    return out, GroupAdamState(count=optax.safe_increment(state.count), adam=new)

  return optax.GradientTransformation(init, update)


def schedules(a: AlignConfig, total_steps: int) -> dict:
  """{group: learning rate as a function of the applied updates so far}, per trainable group.

  The adapter and a training encoder: `reconstruct_learning_rate` during the reconstruction
  steps, then their rate over the QA steps. The LLM: 0 until the reconstruction steps and its
  `llm_frozen_steps` are over, then its rate for `llm_steps` (0: to the end), then 0.
  Phases count applied updates while the batches count steps: a skipped step (non-finite, rare,
  counted and reported) leaves the rates one step behind the batches, so the last reconstruction
  rate would meet the first QA batch.
  """
  zero = optax.constant_schedule(0.0)

  def schedule(lr, start, span, before):
    """`before` until `start`, then `lr` over `span` steps (warmed up and decayed within them), then 0."""
    if a.schedule == "constant":
      during = optax.constant_schedule(lr)
    else:
      during = optax.warmup_cosine_decay_schedule(0.0, lr, a.warmup_steps, span, end_value=lr * 0.1)
    parts, bounds = ([before], [start]) if start else ([], [])
    parts.append(during)
    if start + span < total_steps:  # then frozen to the end
      parts, bounds = parts + [zero], bounds + [start + span]
    return optax.join_schedules(parts, bounds) if bounds else during

  qa_start = a.reconstruct_steps
  reconstructing = optax.constant_schedule(a.reconstruct_learning_rate)
  out = {}
  for g in a.trainable():
    if g == "llm":
      start = qa_start + a.llm_frozen_steps
      out[g] = schedule(a.llm_learning_rate, start, a.llm_steps or total_steps - start, zero)
    else:
      out[g] = schedule(getattr(a, LR_OF[g]), qa_start, total_steps - qa_start, reconstructing)
  return out


def scale_by_group_schedule(schedules: dict) -> optax.GradientTransformation:
  """Updates {group: tree} scaled by -schedules[group](step), as `optax.scale_by_learning_rate`."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    out = {g: jax.tree.map(lambda u, g=g: -schedules[g](state.count) * u, sub) for g, sub in updates.items()}
    return out, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)
