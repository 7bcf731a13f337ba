"""Stage 2's optimizer: AdamW with one learning rate per trainable group (adapter, llm, encoder).

`LR_OF` names the `align` field that sets each group's rate; the LLM's schedule starts after
`align.llm_frozen_steps`.
"""

import jax
import jax.numpy as jnp
import optax

from uqa_jax.config.recipes import AlignConfig

LR_OF = {"adapter": "learning_rate", "encoder": "learning_rate", "llm": "llm_learning_rate"}


def make_optimizer(a: AlignConfig, total_steps: int):
  """AdamW with one learning rate per trainable group, after clipping the global gradient norm.

  Built as clip -> Adam moments -> decoupled weight decay -> per-group rate (what `optax.adamw`
  chains, with the last link per group). The optimizer state then holds only arrays shaped
  like the parameters (no `optax.multi_transform` masks), which Orbax saves and restores as is.
  """
  return optax.chain(optax.clip_by_global_norm(a.grad_clip),
                     optax.scale_by_adam(b1=a.betas[0], b2=a.betas[1]),
                     optax.add_decayed_weights(a.weight_decay),
                     scale_by_group_schedule(schedules(a, total_steps)))


def schedules(a: AlignConfig, total_steps: int) -> dict:
  """{group: learning rate as a function of the applied updates so far}, per trainable group."""
  def schedule(lr, delay=0):
    if a.schedule == "constant":
      after = optax.constant_schedule(lr)
    else:
      after = optax.warmup_cosine_decay_schedule(0.0, lr, a.warmup_steps, total_steps - delay, end_value=lr * 0.1)
    return optax.join_schedules([optax.constant_schedule(0.0), after], [delay]) if delay else after
  delays = {"llm": a.llm_frozen_steps}  # the LLM's schedule starts after its frozen steps
  return {g: schedule(getattr(a, LR_OF[g]), delays.get(g, 0)) for g in a.trainable()}


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
