"""Compilation accounting from JAX's own monitoring events (`jax.monitoring`), never estimated.

`Collector` counts, while it is open, the XLA executables the process compiled or read from the
persistent compilation cache (one `backend_compile` event each), how many of those came from the
cache, and the seconds spent tracing, lowering and compiling them, next to the wall time of the
work. The runner opens one around every stage and writes its `summary()` into the stage's
`result.json` under `compile`.
"""

import threading
import time

from jax import monitoring

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # one per executable (a cache hit too)
CACHE_HIT = "/jax/compilation_cache/cache_hits"
COMPILE_EVENTS = (TRACE, LOWER, BACKEND_COMPILE)


class Collector:
  """A context manager; `summary()` once it is closed (or while it is open, so far)."""

  def __init__(self):
    self._lock = threading.Lock()
    self.executables = self.cache_hits = 0
    self.compile_seconds = 0.0
    self._start = self._end = None

  def _on_duration(self, event: str, duration_secs: float, **_):
    if event in COMPILE_EVENTS:
      with self._lock:
        self.compile_seconds += duration_secs
        self.executables += event == BACKEND_COMPILE

  def _on_event(self, event: str, **_):
    if event == CACHE_HIT:
      with self._lock:
        self.cache_hits += 1

  def __enter__(self):
    self._start = time.time()
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc):
    monitoring.unregister_event_duration_listener(self._on_duration)
    monitoring.unregister_event_listener(self._on_event)
    self._end = time.time()
    return False

  def summary(self) -> dict:
    """{"executables", "cache_hits", "compile_seconds", "seconds"} (seconds: the whole wall time)."""
    end = self._end if self._end is not None else time.time()
    return {"executables": self.executables, "cache_hits": self.cache_hits,
            "compile_seconds": round(self.compile_seconds, 3), "seconds": round(end - self._start, 3)}

  def describe(self) -> str:
    s = self.summary()
    cached = f" ({s['cache_hits']} read from the persistent cache)" if s["cache_hits"] else ""
    return (f"compiled {s['executables']} XLA executables{cached} in {s['compile_seconds']:.1f}s "
            f"of its {s['seconds']:.1f}s")
