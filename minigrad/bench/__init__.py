"""``python -m minigrad.bench``: the batch-size study.

For each batch size and each selected backend (minigrad's numpy/numba/cupy, and PyTorch as a peer), a fresh
model trains from the same initial weights on the same data order with the same optimizer, and the bench
records step time (median, IQR), samples/s, epoch time, warm-up time, peak memory, final loss, test
accuracy, optimizer updates and, when asked, the time to a target accuracy.

Modules: ``cli`` (arguments, run directory, resume), ``settings`` (what a study is), ``sweep`` (the loop),
``measure`` (one entry, phase by phase), ``engines`` (minigrad backend or torch peer behind one interface),
``autobatch`` (``--batch-sizes auto``), ``store`` (results.jsonl), ``report`` and ``plots`` (derived files),
``machine`` (what it ran on; thread control).

Importing the package imports none of them: ``python -m minigrad.bench`` imports the CLI inside
``__main__``, where a Ctrl-C during the imports is caught like any other.
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m minigrad.bench`` (see ``cli.main``)."""
    from .cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]
