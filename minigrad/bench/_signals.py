"""How the bench turns Ctrl-C into KeyboardInterrupt: everywhere, except inside the few calls whose exceptions
Python does not pass on as they are."""

import signal

#: Frames in which a KeyboardInterrupt would not reach the bench as one: in a finalizer (``__del__``) Python
#: prints "Exception ignored" and drops it; in ``__set_name__`` (run while a class body is created, as during an
#: import: numba's ``IntEnumClass``) Python 3.11 wraps it in a RuntimeError. Inside them the interrupt is raised
#: again 10 ms later (SIGALRM), once the call is done.
DEFERRED = ("__del__", "__set_name__")


def interrupt(signum, frame):
    """The SIGINT and SIGALRM handler: raise KeyboardInterrupt, or defer it out of a DEFERRED frame."""
    f = frame
    while f is not None:
        if f.f_code.co_name in DEFERRED:
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        f = f.f_back
    raise KeyboardInterrupt


def install() -> None:
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
