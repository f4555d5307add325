import sys

from ._signals import install

install()  # Ctrl-C as KeyboardInterrupt from here on (_signals.interrupt)

try:
    from .cli import main  # a Ctrl-C while the bench's modules import ends here, as one line

    code = main()
except KeyboardInterrupt:
    print("error: interrupted before the study started; nothing was written", file=sys.stderr)
    code = 130
sys.exit(code)
