"""How the bench turns Ctrl-C into KeyboardInterrupt: everywhere, and again if Python drops it on the way."""

import signal
import sys

#: Frames in which a KeyboardInterrupt would not reach the bench as one: in a finalizer (``__del__``) Python
#: prints "Exception ignored" and drops it; in ``__set_name__`` (run while a class body is created, as during an
#: import: numba's ``IntEnumClass``) Python 3.11 wraps it in a RuntimeError. Inside them the interrupt is raised
#: again 10 ms later (SIGALRM), once the call is done.
DEFERRED = ("__del__", "__set_name__")

#: Seconds after which an interrupt that could not be raised, or that was dropped, is raised again.
AGAIN = 0.01


def interrupt(signum, frame):
    """The SIGINT and SIGALRM handler: raise KeyboardInterrupt, or defer it out of a DEFERRED frame."""
    f = frame
    while f is not None:
        if f.f_code.co_name in DEFERRED:
            signal.setitimer(signal.ITIMER_REAL, AGAIN)
            return
        f = f.f_back
    raise KeyboardInterrupt


def _raise_again_or(hook):
    """A sys.excepthook / sys.unraisablehook that raises a dropped KeyboardInterrupt again AGAIN seconds later.

    C code that catches an exception and only prints it reaches these hooks: numba's extension modules import
    ``numba._devicearray`` and hand a failure to ``PyErr_Print`` (sys.excepthook), finalizers and weakref callbacks
    go to sys.unraisablehook. An interrupt that lands there would be printed and the run would go on. Anything
    else goes to ``hook``, the one installed before.
    """
    def handle(*args):
        exc_type = args[0].exc_type if len(args) == 1 else args[0]
        if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, AGAIN)
            return
        hook(*args)

    return handle


def install() -> None:
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
    sys.excepthook = _raise_again_or(sys.excepthook)
    sys.unraisablehook = _raise_again_or(sys.unraisablehook)
