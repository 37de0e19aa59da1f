"""SIGTERM as a request to stop: set by the signal, read by the loop between steps.

`llm_jax.train` installs the handler first thing, so a SIGTERM during startup (imports, data
preparation, compilation) is a clean stop too, not a kill with exit code 143.
"""

import contextlib
import signal

from absl import logging

_state = {"requested": False, "installed": False}


def _handler(signum, frame):
  del frame
  logging.warning("received signal %d: stopping at the next step boundary (a checkpoint is "
                  "saved if any step ran)", signum)
  _state["requested"] = True


def install() -> bool:
  """Installs the SIGTERM handler; False when not on the main thread (no preemption handling)."""
  try:
    signal.signal(signal.SIGTERM, _handler)
  except ValueError:
    return False
  _state["installed"] = True
  return True


def requested() -> bool:
  return _state["requested"]


@contextlib.contextmanager
def watching():
  """The handler for the duration of a training call, unless a program installed it already
  (then a signal received before this call still counts)."""
  if _state["installed"]:
    yield
    return
  _state["requested"] = False
  previous = signal.getsignal(signal.SIGTERM)
  installed = install()
  try:
    yield
  finally:
    if installed:
      signal.signal(signal.SIGTERM, previous)
      _state["installed"] = False
