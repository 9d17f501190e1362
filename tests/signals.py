"""Child processes that a test signals must not inherit ignored signals: a test run started with `nohup` (SIGHUP
ignored) or as a background job of a non-interactive shell (SIGINT ignored) would otherwise hand its children
signal dispositions the product never sees from a terminal, and a test of what a signal does would fail for that
reason alone."""

from __future__ import annotations

import signal

SIGNALS = tuple(getattr(signal, name) for name in ("SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT") if hasattr(signal, name))


def default_signals() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child starts with the default action for these signals."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
