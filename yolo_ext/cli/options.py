"""Command-line options of the ``tools/`` scripts: one parser class, so every option has the same two spellings.

Every long option is accepted as ``--with-hyphens`` and ``--with_underscores`` (``--batch-size`` / ``--batch_size``);
help and the README show the hyphen spelling only. An option renamed because its old name meant different things in
different tools (``--steps``) keeps the old name as a deprecated alias that says what to write instead.

The same parser also reads Ultralytics-style ``key=value`` arguments (:func:`parse_key_values`, used by
``yolo-ext prune`` / ``yolo-ext finetune``): every option name, in either spelling and without the dashes, is a key,
so the ``yolo-ext`` modes and the ``tools/`` scripts cannot drift apart.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["ArgumentParser", "OptionError", "describe_keys", "parse_key_values"]


class OptionError(ValueError):
    """A ``key=value`` argument the parser does not take (unknown key, bad value, missing key); nothing was run."""


class _OneSpelling(argparse.ArgumentDefaultsHelpFormatter):
    """Help lists each option once, in its hyphen spelling, with its default.

    Switches show none: argparse's default of one switch of a pair is the other's value (``--uniform`` would read
    "default: True" where the criterion decides), so their help says in words what happens without them. Neither does
    an option whose help already says its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

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

    #: set by :func:`parse_key_values`: a parse error raises :class:`OptionError` instead of printing usage and exiting
    raise_errors: bool = False

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

    def error(self, message: str):  # type: ignore[override]
        """argparse's usage-and-exit, or :class:`OptionError` while reading ``key=value`` arguments."""
        if self.raise_errors:
            raise OptionError(message)
        super().error(message)

    def _get_option_tuples(self, option_string: str) -> list:
        """Prefix matching (``--model`` for ``--model-path``) where the matches are one option's spellings."""
        tuples = super()._get_option_tuples(option_string)
        unique = {id(t[0]): t for t in tuples}
        return list(unique.values()) if len(unique) == 1 else tuples


#: Switch values, as Ultralytics' own ``key=value`` parser reads booleans (any case), and values that mean "default".
TRUE, FALSE, NONE = {"true"}, {"false"}, {"none", "null", ""}


def _long(action: argparse.Action) -> list[str]:
    """The names a key may use: the long option names, or a positional argument's name (``checkpoints``)."""
    if not action.option_strings:
        return [action.dest]
    return [s[2:] for s in action.option_strings if s.startswith("--")]


def _key(action: argparse.Action) -> str:
    """An option's key as Ultralytics writes keys: its first long name with underscores (``model_path``)."""
    return _long(action)[0].replace("-", "_")


def _aliases(action: argparse.Action) -> list[str]:
    """The option's other names, not counting the underscore/hyphen spellings of one name (``model`` for model_path)."""
    shown = getattr(action, "hidden_spellings", ())
    names = [s[2:].replace("-", "_") for s in action.option_strings if s.startswith("--") and s not in shown]
    return [n for n in dict.fromkeys(names) if n != _key(action)]


def _keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every key the parser takes (each long option name, both spellings, no dashes) -> its action."""
    return {name: a for a in parser._actions if a.dest != "help" for name in _long(a)}


def _is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0


def _switch_args(parser: argparse.ArgumentParser, key: str, action: argparse.Action, value: str) -> list[str]:
    """``overwrite=True`` -> ``--overwrite``; ``global=False`` -> its opposite switch (``--uniform``), else nothing."""
    word = value.strip().lower()
    if word in TRUE:
        return [action.option_strings[0]]
    if word not in FALSE:
        raise OptionError(f"{key}={value!r}: {key} is a switch; write {key}=True or {key}=False.")
    opposite = [a for a in parser._actions if a.dest == action.dest and a is not action and _is_switch(a)
                and a.const != action.const]
    return [opposite[0].option_strings[0]] if opposite else []  # False: not given (its default)


def _values(action: argparse.Action, value: str) -> list[str]:
    """One value, or a list for options taking several (``protect=[model.9,model.10]`` or ``protect="a b"``)."""
    if action.nargs in ("*", "+") or (isinstance(action.nargs, int) and action.nargs > 1):
        return value.strip().strip("[]").replace(",", " ").split()
    return [value]


def parse_key_values(
    parser: ArgumentParser, tokens: Sequence[str], required: Sequence[str] = (), unless: str | None = None,
) -> argparse.Namespace | None:
    """Parse Ultralytics-style ``key=value`` tokens with ``parser`` (the same options as its ``--key value`` form).

    Keys are the option names without dashes, in either spelling (``prune_type=`` / ``prune-type=``), or an alias the
    parser declares (``ratio=`` for ``--prune-ratio``). A switch takes True or False; an option taking several values
    takes a list (``protect=[model.9,model.10]``); ``None`` leaves an option at its default.

    Args:
        parser: the tool's parser (:class:`ArgumentParser`).
        tokens: the arguments after the mode name.
        required: keys (dests) that must be given besides the parser's required options...
        unless: ...unless this one is (``resume`` for fine-tuning).

    Returns:
        The namespace, as ``parser.parse_args`` gives it; None when help was asked for (``help``).

    Raises:
        OptionError: an unknown key, a token that is not ``key=value``, a bad value, a missing required key.

    Examples:
        >>> p = ArgumentParser(prog="t")
        >>> _ = p.add_argument("--prune-ratio", "--ratio", type=float, default=0.4)
        >>> parse_key_values(p, ["ratio=0.5"]).prune_ratio, parse_key_values(p, ["prune-ratio=0.2"]).prune_ratio
        (0.5, 0.2)
    """
    keys = _keys(parser)
    positional: list[str] = []  # values of positional arguments (checkpoints=[a.pt,b.pt]), after the options
    given: dict[str, str] = {}  # dest -> the key the user wrote
    written: dict[int, str] = {}  # id(action) -> the key the user wrote (two switches can share a dest)
    given_values: dict[int, str] = {}  # id(action) -> the value written, for the duplicate-key message
    argv: list[str] = []
    for token in tokens:
        if token.strip().lower() in {"help", "-h", "--help"}:
            return None
        key, sep, value = token.partition("=")
        if not sep or not key:
            hint = f" (write {token.lstrip('-')}=...)" if token.startswith("-") and token.lstrip("-") in keys else ""
            raise OptionError(f"{token!r} is not key=value{hint}. Keys: {', '.join(_listing(parser))}.")
        action = keys.get(key)
        if action is None:
            close = difflib.get_close_matches(key, list(keys), n=1)
            maybe = f" Did you mean {close[0]}=?" if close else ""
            raise OptionError(f"Unknown key {key!r}.{maybe} Keys: {', '.join(_listing(parser))} "
                              "(help: describes them).")
        if id(action) in written:
            raise OptionError(
                f"{key}= is given twice ({written[id(action)]}={given_values[id(action)]}, {key}={value}); give it "
                "once."
                if written[id(action)] == key else
                f"{written[id(action)]}= and {key}= are the same option ({written[id(action)]}="
                f"{given_values[id(action)]}, {key}={value}); give it once."
            )
        given[action.dest] = written[id(action)] = key
        given_values[id(action)] = value
        if not action.option_strings:
            positional += _values(action, value)
        elif _is_switch(action):
            argv += _switch_args(parser, key, action, value)
        elif value.strip().lower() not in NONE:
            values = _values(action, value)  # one value as --key=value: a value starting with "-" stays a value
            argv += [f"--{key}", *values] if action.nargs in ("*", "+") or isinstance(action.nargs, int) \
                else [f"--{key}={value}"]
    argv += ["--", *positional] if positional else []
    for dest, action in {a.dest: a for a in parser._actions}.items():
        needed = action.required or (dest in required and not (unless and unless in given))
        if needed and dest not in given:
            alt = f", or {unless}=" if dest in required and unless else ""
            also = "".join(f" (or {n}=)" for n in _aliases(action))
            raise OptionError(f"{_key(action)}={also} is required{alt}: {action.help}.")
    names = {"/".join(a.option_strings): written.get(id(a), _key(a)) for a in parser._actions if a.option_strings}
    parser.raise_errors = True
    try:
        return parser.parse_args(argv)
    except OptionError as e:
        message = str(e)
        for joined in sorted(names, key=len, reverse=True):  # argparse names an option by all its spellings
            message = message.replace(f"argument {joined}", names[joined]).replace(joined, names[joined])
        raise OptionError(message) from None
    finally:
        parser.raise_errors = False


def _listing(parser: argparse.ArgumentParser) -> list[str]:
    return [_key(a) for a in parser._actions if a.dest != "help" and _long(a)]


def describe_keys(parser: argparse.ArgumentParser, usage: str) -> str:
    """What ``yolo-ext <mode> help`` prints: every key with its aliases, help text and default."""
    formatter = parser._get_formatter()
    actions = [a for a in parser._actions if a.dest != "help" and _long(a)]
    width = max(len(_key(a)) + sum(len(n) + 2 for n in _aliases(a)) + (3 if _aliases(a) else 0) for a in actions)
    lines = [usage, "", f"{parser.description}", "",
             "Keys (write key=value; hyphens or underscores, e.g. target_params= or target-params=; "
             "a switch takes True or False):"]
    for a in actions:
        name = _key(a) + (f" ({', '.join(_aliases(a))})" if _aliases(a) else "")
        if _is_switch(a):  # its "default" is argparse's, not the option's (--uniform's would read True)
            text = (a.help or "").replace("%%", "%") + " (True/False)"
        else:
            text = formatter._expand_help(a) if a.help else ""
        if a.required:
            text += " [required]"
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)
