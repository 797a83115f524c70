"""Running test work from several threads at once, with what any thread raised reported by the test."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


def run_in_threads(work: Callable, arguments: Iterable) -> None:
    """Calls work(a) for every a in `arguments`, each in its own thread, all started before any is joined; fails
    with every exception the threads raised (an assert in a thread would otherwise only be printed)."""
    errors: list[BaseException] = []

    def guarded(argument) -> None:
        try:
            work(argument)
        except BaseException as error:  # reported by the calling thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
