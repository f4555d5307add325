"""The bench's Ctrl-C handler: a KeyboardInterrupt, deferred out of the calls where Python would not pass it on."""

import signal
from types import SimpleNamespace

import pytest

from minigrad.bench import _signals


def frames(*names):
    """A fake frame chain, innermost first."""
    frame = None
    for name in reversed(names):
        frame = SimpleNamespace(f_code=SimpleNamespace(co_name=name), f_back=frame)
    return frame


def test_ctrl_c_raises_keyboard_interrupt_in_ordinary_code():
    with pytest.raises(KeyboardInterrupt):
        _signals.interrupt(signal.SIGINT, frames("_run", "main", "<module>"))


@pytest.mark.parametrize("inside", _signals.DEFERRED)
def test_ctrl_c_inside_a_finalizer_or_set_name_is_raised_again_10_ms_later(inside):
    previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        _signals.interrupt(signal.SIGINT, frames("helper", inside, "<module>"))  # returns: nothing raised now
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < delay <= 0.01
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
