"""The loop's background batch prefetcher: order, resumable state, errors, placement."""

import threading

import pytest

from llm_jax.training.prefetch import Prefetcher


class _Counter:
  """An iterator 0, 1, 2, ... (up to `stop`) with get_state / set_state."""

  def __init__(self, stop=None, fail_at=None):
    self.next_value, self.stop, self.fail_at = 0, stop, fail_at
    self.threads = set()

  def __next__(self):
    self.threads.add(threading.current_thread().name)
    if self.next_value == self.fail_at:
      raise ValueError("bad document")
    if self.stop is not None and self.next_value >= self.stop:
      raise StopIteration
    self.next_value += 1
    return self.next_value - 1

  def get_state(self):
    return {"next": self.next_value}

  def set_state(self, state):
    self.next_value = state["next"]


def test_batches_in_order_placed_in_the_background_and_state_of_the_consumed_ones():
  source = _Counter()
  it = Prefetcher(source, place=lambda x: ("placed", x), depth=3)
  assert [next(it) for _ in range(4)] == [("placed", i) for i in range(4)]
  state = it.get_state()
  assert state == {"next": 4}  # although the thread has read further ahead
  assert source.threads == {"batch-prefetch"}
  it.set_state({"next": 1})
  assert next(it) == ("placed", 1)
  it.close()
  resumed = Prefetcher(_Counter(), depth=2)
  resumed.set_state(state)
  assert next(resumed) == 4
  resumed.close()


def test_end_and_errors_reach_the_consumer():
  it = Prefetcher(_Counter(stop=2))
  assert list(it) == [0, 1]
  with pytest.raises(StopIteration):
    next(it)
  it.close()
  failing = Prefetcher(_Counter(fail_at=1))
  assert next(failing) == 0
  with pytest.raises(ValueError, match="bad document"):
    next(failing)
  failing.close()
