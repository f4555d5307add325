import signal
import sys


def _interrupt(signum, frame):
    """Ctrl-C as KeyboardInterrupt, except inside a finalizer (``__del__``), where Python would print "Exception
    ignored" and lose the interrupt: there it is raised again 10 ms later (SIGALRM), once the finalizer is done."""
    f = frame
    while f is not None:
        if f.f_code.co_name == "__del__":
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        f = f.f_back
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, _interrupt)
signal.signal(signal.SIGALRM, _interrupt)

try:
    from .cli import main  # a Ctrl-C while the bench's modules import ends here, as one line

    code = main()
except KeyboardInterrupt:
    print("error: interrupted before the study started; nothing was written", file=sys.stderr)
    code = 130
sys.exit(code)
