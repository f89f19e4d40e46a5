"""Small helpers shared by the ``yolo_ext.nn`` modules: width rounding and size validation."""

from __future__ import annotations

import numbers

__all__ = ["check_bool", "check_channels", "check_int", "make_divisible"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going below ``min_value`` or 10% below ``v``.

    Hardware-friendly widths without hand arithmetic that can reach zero (timm / MobileNet convention).

    Args:
        v (float): Requested width, e.g. ``channels * ratio``.
        divisor (int): The result is a multiple of this (>= 1).
        min_value (int | None): Lower bound; defaults to ``divisor``.

    Returns:
        (int): The rounded width, always >= 1.

    Examples:
        >>> make_divisible(64 * 0.25), make_divisible(3 * 0.25), make_divisible(100, 8)
        (16, 8, 104)
    """
    divisor = check_int("make_divisible", "divisor", divisor, 1)
    min_value = divisor if min_value is None else check_int("make_divisible", "min_value", min_value, 1)
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # rounding down must not remove more than 10% of the width
        new_v += divisor
    return int(new_v)


def check_int(owner: str, arg: str, value: object, minimum: int = 1, hint: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer >= ``minimum``, else raise a ``ValueError`` that says why.

    Sizes are checked when a module is built so a bad YAML fails there, not deep inside a forward pass.

    Args:
        owner (str): Class or function name to put in the message.
        arg (str): Argument name to put in the message.
        value (object): The value to check (bools are rejected).
        minimum (int): Smallest allowed value.
        hint (str): What to change, appended to the message.

    Returns:
        (int): ``value`` as a plain int.

    Examples:
        >>> check_int("MCA", "kernel_size", 5, 1)
        5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        msg = f"{owner}: {arg} must be an integer >= {minimum}, got {value!r}"
        raise ValueError(f"{msg}; {hint}" if hint else msg)
    return int(value)


def check_bool(owner: str, arg: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False``, else raise a ``ValueError`` that says so.

    A YAML flag is easy to get wrong (``[banana]``, ``"False"``, ``0.5``) and Python's truthiness would silently turn
    any of them into ``True``.

    Args:
        owner (str): Class name to put in the message.
        arg (str): Argument name to put in the message.
        value (object): The value to check.

    Returns:
        (bool): ``value``.

    Examples:
        >>> check_bool("MCA", "no_spatial", False)
        False
    """
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {arg} must be True or False, got {value!r}; write true or false in the YAML")
    return value


def check_channels(name: str, c: object, minimum: int = 1, arg: str = "c1", hint: str = "") -> int:
    """Validate a channel count for module ``name``; see ``check_int``.

    Args:
        name (str): Class name to put in the message.
        c (object): Channel count.
        minimum (int): Smallest allowed count.
        arg (str): Argument name to put in the message.
        hint (str): What to change; defaults to advice about the preceding layer.

    Returns:
        (int): ``c`` as a plain int.

    Examples:
        >>> check_channels("CoordAtt", 64)
        64
    """
    hint = hint or "pass the channel count of the feature map this module receives"
    return check_int(name, arg, c, minimum, hint)
