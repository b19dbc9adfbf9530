"""Progress bars for long work: tqdm on stderr, shown on a terminal or when asked.

``progress(True)`` forces a bar, ``progress(False)`` hides it, ``None`` (the default
everywhere) shows it only when stderr is a terminal. Without tqdm installed (extra
``progress``) the bar is silently a no-op: a progress bar is never a reason to fail.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


class _NoBar:
    """The part of tqdm's interface the library uses, doing nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int | None, desc: str, *, show: bool | None = None, unit: str = "step"):
    """A context manager yielding a bar with ``update(n)``; see the module docstring for ``show``.

    >>> with progress_bar(3, "demo", show=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    """
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)

