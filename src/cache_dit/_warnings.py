"""Warnings that point at the user's line, not at the library's own."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_SKIPPED = ("torch", "diffusers")  # a warning raised inside a pipeline call points at the `pipe(...)` line


def _library_dirs() -> tuple[str, ...]:
    dirs = [_PACKAGE_DIR]
    for name in _SKIPPED:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file:
            dirs.append(os.path.dirname(os.path.abspath(file)) + os.sep)
    return tuple(dirs)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` with the stack level of the first frame outside cache_dit (and torch/diffusers)."""
    dirs = _library_dirs()
    frame = sys._getframe(0)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(dirs):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
