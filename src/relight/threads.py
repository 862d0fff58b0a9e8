"""Overlapping decode, processing and encode: a prefetching reader, an in-order worker (the
render of one frame next to the analysis of the next) and a background writer.

Decoding (PyAV) and encoding (PyAV/libx264, swscale) release the GIL, so on a 2-core machine
running them in their own threads next to the processing thread makes a run take about as long
as its slowest part instead of the sum. Both keep a small bounded queue (frames are streamed,
never accumulated) and hand exceptions back to the caller's thread, so errors and interrupts
behave as in a single thread: the reader re-raises the source's error where the frame would have
been, the writer re-raises the sink's on the next ``write`` or at ``close``.

With the stages in their own threads, both cores are already busy: a library call that splits
its work over the cores (OpenCV's, or a numba kernel's) then waits for the part that landed on
the core another stage holds. :func:`one_core_per_call` runs each call on its caller's core;
on small frames (720p: about 5% faster here), where the calls are short, that wins; on large
ones (4K: about 8% slower) the split still pays.

The BLAS library under numpy (OpenBLAS) is held to one thread for a whole run
(:func:`blas_one_thread`): its calls here are all small (3x3 to 13-channel products at the
working resolution), and its idle worker threads spin (sched_yield) for a while after every
call, taking a core from the stages' threads.

numpy's huge pages for large arrays are turned off for a run as well (:func:`no_huge_pages`):
every frame allocates several new frame-sized arrays, and with huge pages each of them is
faulted in 2 MB at a time, compacting memory on the way.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from time import perf_counter
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from . import kernels

_END = object()


class Prefetch:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead; with ``fn``, yield
    ``fn(item)`` instead, computed in that thread too (work to do on each item before the
    consumer needs it).

    >>> for frame in Prefetch(source):
    ...     ...

    Closing (or leaving the ``with`` block / abandoning the loop and calling :meth:`close`)
    stops the thread after the item it is producing. ``initializer()`` runs first in that
    thread (as :class:`InOrder`'s)."""

    def __init__(self, iterable: Iterable, depth: int = 3, fn: Optional[Callable[[Any], Any]] = None,
                 initializer: Optional[Callable[[], Any]] = None):
        self._it = iter(iterable) if fn is None else map(fn, iterable)
        self._initializer = initializer
        self.busy = 0.0  # seconds the thread spent producing items
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relight-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._initializer is not None:
                self._initializer()
            t = perf_counter()
            for item in self._it:
                self.busy += perf_counter() - t
                if not self._put((True, item)):
                    return
                t = perf_counter()
        except BaseException as exc:  # handed to the consumer
            self._put((False, exc))
            return
        self._put((True, _END))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        while True:
            ok, item = self._q.get()
            if not ok:
                self.close()
                raise item
            if item is _END:
                self._thread.join()
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def blas_one_thread():
    """Within the block, the BLAS libraries loaded in the process (numpy's OpenBLAS; a
    process-wide setting) use one thread; the setting is restored on exit. Every BLAS call
    the stages make is small, and OpenBLAS's idle threads spin after each one: on a 2-core
    machine, 300 frames of a 720p clip took 15.2-15.3 s with two threads (6.5 s of system time
    in their spinning) and 13.0-13.1 s with one. (``import relight`` sets
    ``OPENBLAS_NUM_THREADS=1`` too, but that only counts where numpy is not loaded yet.)"""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextmanager
def no_huge_pages():
    """Within the block, numpy does not ask for transparent huge pages for its large arrays (a
    process-wide setting; restored on exit). A run allocates several frame-sized arrays a frame
    (the matte, the output, the codecs' frames), each one new: faulting them in as huge pages
    (with the kernel compacting memory for them on this machine's ``defrag=madvise`` setting)
    cost more than the TLB saves. Measured on this 2-core machine, interleaved runs: a 300-frame
    720p clip 12.8-13.7 s against 14.1-14.9 s (3 of 3 pairs), a 60-frame 4K clip 14.5-17.7 s
    against 16.3-20.9 s (5 of 5), system time ~20% lower. A no-op where numpy has no such
    setting."""
    multiarray = getattr(getattr(np, "core", None), "multiarray", None)
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    if setter is None:
        yield
        return
    prev = setter(False)
    try:
        yield
    finally:
        setter(prev)


@contextmanager
def one_core_per_call():
    """Within the block, every OpenCV call (process-wide: OpenCV has one setting) and every
    numba kernel launched from this thread runs on one core; both settings are restored on
    exit. A worker thread gets the same for its kernels from :meth:`kernels.set_threads`
    (``InOrder(..., initializer=...)``)."""
    cv_prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    nb_prev = kernels.set_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_prev)
        kernels.set_threads(nb_prev)


class InOrder:
    """Call ``fn(item)`` in one background thread, in submission order, at most ``depth`` items
    behind the caller; ``initializer()`` runs first in that thread.

    >>> with InOrder(render, depth=2) as worker:
    ...     for plan in plans:
    ...         for result, tag in worker.submit(plan, tag):
    ...             write(result, tag)
    ...     for result, tag in worker.drain():
    ...         write(result, tag)

    :meth:`submit` returns the results that are due (oldest first), waiting for the oldest while
    more than ``depth`` are pending; ``fn``'s exception is re-raised there, in the caller's
    thread. Closing drops what was not started and waits for the item in progress."""

    def __init__(self, fn: Callable[[Any], Any], depth: int = 2, initializer: Optional[Callable[[], Any]] = None):
        self._fn = fn
        self.depth = max(1, int(depth))
        self.busy = 0.0  # seconds the thread spent in fn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relight-render", initializer=initializer)
        self._pending: deque = deque()

    def _call(self, item):
        t = perf_counter()
        try:
            return self._fn(item)
        finally:
            self.busy += perf_counter() - t

    def submit(self, item, tag=None) -> List[Tuple[Any, Any]]:
        self._pending.append((self._pool.submit(self._call, item), tag))
        done = []
        while len(self._pending) > self.depth:
            future, t = self._pending.popleft()
            done.append((future.result(), t))
        return done

    def drain(self) -> Iterator[Tuple[Any, Any]]:
        """The remaining results, in order."""
        while self._pending:
            future, t = self._pending.popleft()
            yield future.result(), t

    def close(self) -> None:
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "InOrder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWriter:
    """Call ``sink.write(*args, **kwargs)`` in a background thread, in order.

    ``write`` queues a frame (blocking while ``depth`` frames wait) and re-raises an error the
    sink raised for an earlier frame; :meth:`close` waits until every queued frame is written and
    re-raises a pending error. After an error the remaining frames are dropped. Use it as a
    context manager inside the sink's own ``with`` block, so that the writer has stopped before
    the sink commits or discards the output."""

    def __init__(self, sink, depth: int = 3):
        self.sink = sink
        self.busy = 0.0  # seconds the thread spent in sink.write
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="relight-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            entry = self._q.get()
            if entry is _END:
                return
            if self._error is not None:
                continue  # drain
            args, kwargs = entry
            t = perf_counter()
            try:
                self.sink.write(*args, **kwargs)
            except BaseException as exc:
                self._error = exc
            self.busy += perf_counter() - t

    def _raise(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def write(self, *args, **kwargs) -> None:
        self._raise()
        self._q.put((args, kwargs))

    def close(self) -> None:
        """Wait for the queued frames, stop the thread, re-raise the sink's error if any."""
        if self._thread.is_alive():
            self._q.put(_END)
            self._thread.join()
        self._raise()

    def abandon(self) -> None:
        """Drop the queued frames and stop the thread (after the frame being written)."""
        self._error = self._error or _Abandoned()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive():
            self._q.put(_END)
            self._thread.join()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


class _Abandoned(Exception):
    pass
