"""The command-line tools' options and work, inside the package so every front end shares them.

Each module has ``get_args_parser()`` (the options, :class:`yolo_ext.cli.options.ArgumentParser`) and ``main(args)``
(returns the exit code). ``tools/<name>.py`` parses ``--option value`` argv with them; ``yolo-ext <name> key=value``
(:mod:`yolo_ext.cli.app`) parses Ultralytics-style arguments with the same parser, so both front ends know the same
keys and call the same API: :mod:`.prune`, :mod:`.finetune`, :mod:`.iterative` (``tools/iterative_prune.py``) and
:mod:`.val` (``yolo-ext compare``; ``yolo-ext val`` stays Ultralytics' validation) are ``yolo-ext`` modes too;
:mod:`.train` and :mod:`.demo` are tools only (``yolo-ext train`` is Ultralytics' own training).
"""
