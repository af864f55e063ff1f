"""/livez reports a hash thread that never comes back, whatever the message counts say."""

from __future__ import annotations

import threading
import time

from worker.observability import BusyThreads, Watch


def test_a_hash_thread_busy_past_its_bound_fails_liveness_until_it_returns() -> None:
    busy = BusyThreads()
    watch = Watch(port=0, liveness_timeout_s=600, ready_check=list, stuck_after_s=0.3, busy=busy)
    release = threading.Event()

    def stuck() -> None:
        with busy.busy():
            release.wait(10)

    assert watch.liveness()[0]
    thread = threading.Thread(target=stuck)
    thread.start()
    try:
        time.sleep(0.1)
        assert watch.liveness()[0]  # busy, but not for long
        time.sleep(0.4)
        alive, why = watch.liveness()
        assert not alive
        assert "hash thread has been busy with one image" in why
    finally:
        release.set()
        thread.join()
    assert watch.liveness()[0]
