"""Command-line options of the ``tools/`` scripts: one parser class, so every option has the same two spellings.

Every long option is accepted as ``--with-hyphens`` and ``--with_underscores`` (``--batch-size`` / ``--batch_size``);
help and the README show the hyphen spelling only. An option renamed because its old name meant different things in
different tools (``--steps``) keeps the old name as a deprecated alias that says what to write instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["ArgumentParser"]


class _OneSpelling(argparse.ArgumentDefaultsHelpFormatter):
    """Help lists each option once, in its hyphen spelling, with its default."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "hidden_spellings", ())
        if hidden:
            shown = argparse.Action(
                [s for s in action.option_strings if s not in hidden], action.dest, nargs=action.nargs,
                metavar=action.metavar,
            )
            return super()._format_action_invocation(shown)
        return super()._format_action_invocation(action)


def _spellings(name: str) -> list[str]:
    """``--batch_size`` -> [``--batch-size``, ``--batch_size``]; short options as they are."""
    if not name.startswith("--"):
        return [name]
    return ["--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")]


def _deprecated(old: Sequence[str], new: str, meaning: str) -> type[argparse.Action]:
    """A store action that notes on stderr when one of the ``old`` names was used."""

    class Deprecated(argparse._StoreAction):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in old:
                print(f"{parser.prog}: note: {option_string} is deprecated; write {new} ({meaning}).", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


def _add_spelled(add: Any, names: Sequence[str], deprecated: Sequence[str], kwargs: dict[str, Any]) -> argparse.Action:
    """Call ``add`` (a parser's or a group's ``add_argument``) with both spellings of every long option name."""
    if not names or not names[0].startswith("-"):
        return add(*names, **kwargs)
    spellings = list(dict.fromkeys(form for name in names for form in _spellings(name)))
    shown = [s for s in spellings if not s.startswith("--") or "_" not in s[2:]]
    old = [o for o in dict.fromkeys(form for d in deprecated for form in _spellings(d)) if o not in spellings]
    if old:
        kwargs["action"] = _deprecated(old, shown[-1], kwargs.get("help", ""))
    action = add(*spellings, *old, **kwargs)
    action.hidden_spellings = tuple(s for s in action.option_strings if s not in shown)  # type: ignore[attr-defined]
    return action


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose long options take both spellings; ``--help`` shows one, with defaults.

    Args:
        *args, **kwargs: as for ``argparse.ArgumentParser``.

    Examples:
        >>> p = ArgumentParser(prog="t")
        >>> _ = p.add_argument("--batch-size", type=int, default=16)
        >>> p.parse_args(["--batch_size", "8"]).batch_size, p.parse_args(["--batch-size", "4"]).batch_size
        (8, 4)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _OneSpelling)
        kwargs.setdefault(
            "epilog", "Every option may also be written with underscores instead of hyphens (--batch_size)."
        )
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, deprecated: Sequence[str] = (), **kwargs: Any) -> argparse.Action:
        """Add an option under its hyphen spelling and its underscore spelling.

        Args:
            *names: option strings as for argparse (the first long one, in either spelling, names ``dest``).
            deprecated: old option names still accepted with a note on stderr saying what to write instead.
            **kwargs: as for ``argparse.ArgumentParser.add_argument``.
        """
        return _add_spelled(super().add_argument, names, deprecated, kwargs)

    def add_mutually_exclusive_group(self, **kwargs: Any) -> argparse._MutuallyExclusiveGroup:
        """A group whose options take both spellings too (``--global`` / ``--uniform``, ``--teacher`` / ...)."""
        group = super().add_mutually_exclusive_group(**kwargs)
        plain = group.add_argument

        def add_argument(*names: str, deprecated: Sequence[str] = (), **kw: Any) -> argparse.Action:
            return _add_spelled(plain, names, deprecated, kw)

        group.add_argument = add_argument  # type: ignore[method-assign]
        return group

    def _get_option_tuples(self, option_string: str) -> list:
        """Prefix matching (``--model`` for ``--model-path``) where the matches are one option's spellings."""
        tuples = super()._get_option_tuples(option_string)
        unique = {id(t[0]): t for t in tuples}
        return list(unique.values()) if len(unique) == 1 else tuples
