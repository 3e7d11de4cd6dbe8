"""Command-line plumbing shared by every entry point (``faceswap`` and ``python -m pipelines.flow``).

Expected failures (:class:`~faceswap.errors.FaceswapError`) print as one ``error: ...`` line with their exit
status; anything else keeps its traceback, because it is a bug.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from faceswap.errors import FaceswapError


def fail(message: str, code: int = 1) -> None:
    """Print a clear error to stderr and exit non-zero (no traceback for expected failures)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a FaceswapError into `error: <message>` and its exit status; any other exception is a bug."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FaceswapError as err:
            fail(str(err), err.exit_code)

    return run


class App(typer.Typer):
    """A Typer whose every command reports the project's expected failures in one line (no traceback)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda func: register(one_line_errors(func))
