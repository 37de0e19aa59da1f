"""Prefetcher: the next batches read and placed on the devices by a background thread.

The train step then never waits for the input pipeline (unless the pipeline is slower than
the step). `get_state()` is the wrapped iterator's state after the last batch handed out,
so a checkpoint resumes exactly at the next unconsumed batch.
"""

import queue
import threading
from typing import Any, Callable

_END = object()


class Prefetcher:

  def __init__(self, iterator, place: Callable[[Any], Any] = lambda batch: batch, depth: int = 2):
    if depth < 1:
      raise ValueError(f"Prefetcher depth must be >= 1, got {depth}")
    self._iterator = iterator
    self._place = place
    self._depth = depth
    self._state = iterator.get_state()
    self._start()

  def _start(self):
    self._queue = queue.Queue(maxsize=self._depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, name="batch-prefetch", daemon=True)
    self._thread.start()

  def _fill(self):
    try:
      while not self._stop.is_set():
        try:
          batch = next(self._iterator)
        except StopIteration:
          self._put((_END, None))
          return
        self._put((self._place(batch), self._iterator.get_state()))
    except BaseException as e:  # pylint: disable=broad-except
      self._put((e, None))  # Raised in the consumer's thread, at its next batch.

  def _put(self, item):
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def __iter__(self):
    return self

  def __next__(self):
    item, state = self._queue.get()
    if item is _END:
      self._queue.put((_END, None))  # Stay exhausted.
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    self._state = state
    return item

  def get_state(self):
    return self._state

  def set_state(self, state):
    self.close()
    self._iterator.set_state(state)
    self._state = state
    self._start()

  def close(self):
    self._stop.set()
    self._thread.join()
