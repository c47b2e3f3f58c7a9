"""Old public names kept working for a while, each use warning with :class:`DeprecationWarning`.

Only names of a released version get an alias here (PEP 387: a deprecation period before a
removal); the aliases go in a later minor version.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])


def _warn(old: str, new: str) -> None:
    # stacklevel 3: the warning points at the caller's line, not at this module or the wrapper.
    warnings.warn(f"{old} is deprecated, use {new}", DeprecationWarning, stacklevel=3)


class Alias:
    """A read-only class attribute standing for attribute ``new`` under its old name (a renamed
    dataclass field or property); each read warns that the old name is deprecated."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = f"{owner.__name__}.{name}"

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        _warn(self.old, self.old.rsplit(".", 1)[0] + "." + self.new)
        return getattr(instance, self.new)


def renamed_keywords(**renamed: str) -> Callable[[_F], _F]:
    """Decorate a function whose keyword parameters were renamed, ``old="new"``: a call with an
    old keyword warns and is passed on under the new one; giving both is a TypeError."""

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__name__}() got both {old!r} and {new!r}")
                    _warn(f"{function.__name__}({old}=…)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
