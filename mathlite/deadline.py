"""A time limit for one answer comparison, in every thread.

Two layers (see :mod:`mathlite.answers` for the third, the size guards of the parser):

1. A cooperative deadline, checked with :func:`tick` between comparison steps. It works
   in every thread.
2. A ``SIGALRM`` interval timer when called from the main thread (a process-pool worker
   runs its tasks in its main thread too), which also interrupts long sympy calls. Other
   threads cannot receive signals.

A timer costs microseconds, so only the comparisons that reach the symbolic stage pay it.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

__all__ = ["Timeout", "tick", "time_limit"]


class Timeout(BaseException):
    """The time budget of one comparison ran out.

    A BaseException, like KeyboardInterrupt, so that the `except Exception:` blocks inside
    sympy cannot swallow it when the alarm fires in the middle of their code.
    """


_local = threading.local()
_HAS_ITIMER = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")


class _Alarm:
    armed = False


def _on_alarm(signum, frame):
    # Raise only while our timer is armed: a late signal must never escape into the caller.
    if _Alarm.armed:
        _Alarm.armed = False
        raise Timeout


def tick() -> None:
    """Cooperative deadline check, the guard that works in every thread."""
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise Timeout


@contextmanager
def time_limit(seconds: float):
    outer_deadline = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    previous = None
    use_signal = (
        _HAS_ITIMER
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0  # someone else's timer: leave it
        and signal.getsignal(signal.SIGALRM) is not None  # a handler set outside Python
    )
    if use_signal:
        try:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
        except (ValueError, OSError):
            use_signal = False
    if use_signal:
        _Alarm.armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _local.deadline = outer_deadline
        if use_signal:
            while True:  # the alarm may fire while we disarm it; it then raises here once
                try:
                    _Alarm.armed = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
                    break
                except Timeout:
                    continue
