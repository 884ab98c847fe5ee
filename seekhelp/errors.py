"""One base class for every error a user can fix, and the one handler that reports it.

Each subsystem raises its own subclass (StoreError, RecipeError, SeedError, ModelError, ...) with a message that is
one readable line naming the file or field. Every entry point (the `seekhelp` CLI commands, `pipelines.generate`,
`sft.train`, `rl.loop`, `seekhelp.eval`) reports them through `report`, so a new error class cannot be forgotten in
one of several catch lists and escape as a traceback: it only has to derive from `SeekhelpError`.

    @entry_point
    def main(argv=None) -> int: ...        # a user error → one `error:` line on stderr, return 2

    with user_errors():                    # inside a Typer command: the same line, then exit 2
        ...
"""

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

EXIT_USER_ERROR = 2


class SeekhelpError(Exception):
    """A problem the user can fix (bad recipe, missing store, unreachable endpoint); the message is one line."""


class HubError(SeekhelpError):
    """A push to the Hugging Face Hub that was refused or could not be staged."""


# Besides our own: the OS errors whose message already names the path (a missing or unwritable file / folder).
USER_ERRORS: tuple[type[BaseException], ...] = (SeekhelpError, FileNotFoundError, IsADirectoryError,
                                                NotADirectoryError, PermissionError)


def one_line(e: BaseException) -> str:
    """The error's message on one line (the class name when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


def report(e: BaseException) -> int:
    """Print the one `error:` line for a user error on stderr; returns the exit code."""
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


F = TypeVar("F", bound=Callable[..., int])


def entry_point(main: F) -> F:
    """Decorate a `main(argv) -> int`: a user error becomes one `error:` line and the return value 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as e:
            return report(e)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """For code that exits instead of returning a code (Typer commands): report, then `SystemExit(2)`."""
    try:
        yield
    except USER_ERRORS as e:
        raise SystemExit(report(e)) from None


__all__ = ["EXIT_USER_ERROR", "USER_ERRORS", "HubError", "SeekhelpError", "entry_point", "one_line", "report",
           "user_errors"]
