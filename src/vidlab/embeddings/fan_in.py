"""Items of several producers, each in a thread of its own, handed to one consumer through a bounded
queue, with errors raised in the consumer and every thread stopped and joined when the consumer stops
early. The extraction readers and their decoding threads run this way (PyAV releases the GIL)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import closing

_DONE = object()


def in_threads(sources: list[Callable[[threading.Event], Iterator]], depth: int) -> Iterator:
    """Items of every ``source(stop)``, each run in a thread of its own, as they come (one source: in
    its order), at most ``depth`` waiting. An error in a source is raised here; when the consumer stops
    early (an error, a signal, a closed iterator), the sources stop at their next item and their
    threads are joined before this returns."""
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def run(source: Callable[[threading.Event], Iterator]) -> None:
        try:
            with closing(source(stop)) as produced:
                for item in produced:
                    if not put(item):
                        return
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)
        finally:
            put(_DONE)

    threads = [threading.Thread(target=run, args=(s,), name=f"vidlab-reader-{k}", daemon=True)
               for k, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            item = items.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()
