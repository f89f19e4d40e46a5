"""Command lines: ``yolo-ext`` (:mod:`.app`), the options every tool shares (:mod:`.options`) and each tool's options
and work (:mod:`.commands`), which ``tools/*.py`` and ``yolo-ext <mode> key=value`` both run."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """The ``yolo-ext`` console script: :func:`yolo_ext.cli.app.main`."""
    from yolo_ext.cli.app import main as run

    run(argv)
