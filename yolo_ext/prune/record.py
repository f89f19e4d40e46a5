"""The pruning record: what was done to a network, kept on the network itself, read and written only here.

Every pruning appends one :class:`PruningRecord` to the network's ``yolo_ext_pruning`` attribute, so every checkpoint
holding the network (the pruned ``.pt``, a fine-tuned ``best.pt``, EMA copies) carries the history, oldest first.
It is stored as plain data (a list of dicts, each with ``"version"``), never as pickled classes: checkpoints stay
loadable with ``torch.load(weights_only=True)`` / ``ULTRALYTICS_SAFE_LOAD=1`` and do not depend on where this module
lives. Everything else in yolo_ext goes through this module to read or change a record:

- :func:`read_history` / :func:`is_pruned` / :func:`times_pruned`: the records of a network;
- :func:`append` (pruning, :mod:`yolo_ext.prune.checkpoint`), :func:`note_class_change` (new class sets,
  :mod:`yolo_ext.train.class_outputs`);
- :func:`base_train_args` (the fine-tuning recipe), :func:`ancestor_digests` (``--teacher``), and the fields
  themselves (``feature_channels`` for distillation, ``latency`` for reports).

Versions: 1 is the untyped dict written before the record had a version (yolo_ext 0.1.0 up to issue 16: the same keys,
no ``"version"``); 2 adds ``"version"``. Reading a version-1 record gives the same :class:`PruningRecord`; a record of
a newer version than this module knows is refused (:class:`RecordError`) rather than half-read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from torch import nn

__all__ = [
    "ATTRIBUTE", "VERSION", "ClassChangeEntry", "FeatureChannels", "LatencyEntry", "PruningRecord", "RecordError",
    "ancestor_digests", "append", "base_train_args", "is_pruned", "note_class_change", "read_history",
    "times_pruned", "write_history",
]

#: the attribute of the network that holds the history (the name checkpoints already carry: it never changes)
ATTRIBUTE = "yolo_ext_pruning"
#: the version this module writes
VERSION = 2


class RecordError(ValueError):
    """A pruning record that cannot be read (a newer format, or not a record at all)."""


@dataclass(frozen=True)
class FeatureChannels:
    """Which input channels of each Detect level survived one pruning: what distillation compares.

    Args:
        widths: the Detect input widths before the pruning, per level.
        kept: per level, the indices (into the network before the pruning) of the channels kept.
    """

    widths: tuple[int, ...] = ()
    kept: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FeatureChannels:
        d = d or {}
        widths = tuple(int(w) for w in d.get("widths") or ())
        return cls(widths, tuple(tuple(int(i) for i in k) for k in d.get("kept") or ()))

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "kept": [list(k) for k in self.kept]} if self.widths else {}


@dataclass(frozen=True)
class ClassChangeEntry:
    """A change of class set after the pruning (:func:`yolo_ext.train.class_outputs.rebuild_class_outputs`)."""

    old_nc: int
    new_nc: int
    data: str | None = None
    by_name: tuple[str, ...] = ()
    date: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassChangeEntry:
        return cls(int(d["from"]), int(d["to"]), d.get("data"), tuple(d.get("by_name") or ()), d.get("date"))

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.old_nc, "to": self.new_nc, "data": self.data, "by_name": list(self.by_name),
                "date": self.date}


@dataclass(frozen=True)
class LatencyEntry:
    """What a latency target measured (:func:`yolo_ext.prune.budget.prune_to_latency`).

    Args:
        backend, runtime: the runtime's name and version; imgsz, batch, threads: the deployment.
        multiple: the channel multiple pruned to; allocation: ``cost`` or ``ratio``; round_mode: how widths were
            snapped to the multiple (``down`` or ``nearest``); target: the fraction of latency asked to be removed.
        base_ms, ms: measured latency before and after; speedup: ``base_ms / ms``; off_target: relative miss.
        table: how the per-layer table was obtained (cached, measured, not used); tries: the search's log.
    """

    backend: str
    runtime: str | None = None
    imgsz: tuple[int, ...] = ()
    batch: int = 1
    threads: int = 1
    multiple: int = 1
    allocation: str | None = None
    round_mode: str | None = None
    target: float | None = None
    base_ms: float | None = None
    ms: float | None = None
    speedup: float | None = None
    off_target: float | None = None
    table: str | None = None
    tries: tuple[dict, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyEntry:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["imgsz"] = tuple(values.get("imgsz") or ())
        values["tries"] = tuple(dict(t) for t in values.get("tries") or ())
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "imgsz": list(self.imgsz), "tries": [dict(t) for t in self.tries]}


@dataclass(frozen=True)
class PruningRecord:
    """One pruning of a network.

    Args:
        config: the :class:`~yolo_ext.prune.engine.PruneConfig` fields it ran with, as plain data (``global_pruning``
            resolved; ``round_to`` an int, None or, before resolution, ``"auto"``).
        params, macs: (before, after).
        channels: output channels of every conv, by module name: (before, after).
        seconds: how long the pruning took.
        feature_channels: the Detect inputs it kept (:class:`FeatureChannels`).
        source: the checkpoint file it was pruned from; source_sha256: the digest of that network's tensors
            (:func:`yolo_ext.prune.checkpoint.network_digest`), its identity for ``--teacher auto``.
        date: when (ISO, seconds).
        base_train_args: the train args of the network before its first pruning (the fine-tuning recipe).
        class_changes: class-set changes made since (:class:`ClassChangeEntry`).
        latency: what a latency target measured (:class:`LatencyEntry`), else None.
        extra: keys of a record this version does not know (kept, and written back unchanged).
    """

    config: dict[str, Any] = field(default_factory=dict)
    params: tuple[int, int] = (0, 0)
    macs: tuple[float, float] = (0.0, 0.0)
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0
    feature_channels: FeatureChannels = FeatureChannels()
    source: str | None = None
    source_sha256: str | None = None
    date: str | None = None
    base_train_args: dict[str, Any] = field(default_factory=dict)
    class_changes: tuple[ClassChangeEntry, ...] = ()
    latency: LatencyEntry | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PruningRecord:
        """Read a stored record of any version up to :data:`VERSION`."""
        if not isinstance(d, Mapping):
            raise RecordError(f"A pruning record must be a dict, got {type(d).__name__}.")
        version = d.get("version", 1)
        if not isinstance(version, int) or version > VERSION:
            raise RecordError(
                f"This pruning record has version {version!r}; this yolo_ext reads versions up to {VERSION}. It was "
                "written by a newer yolo_ext: upgrade yolo_ext to read it."
            )
        known = {"version", *(f.name for f in fields(cls))} - {"extra"}
        return cls(
            config=dict(d.get("config") or {}),
            params=_pair(d.get("params"), int),
            macs=_pair(d.get("macs"), float),
            channels={str(k): _pair(v, int) for k, v in (d.get("channels") or {}).items()},
            seconds=float(d.get("seconds") or 0.0),
            feature_channels=FeatureChannels.from_dict(d.get("feature_channels")),
            source=d.get("source"),
            source_sha256=d.get("source_sha256"),
            date=d.get("date"),
            base_train_args=dict(d.get("base_train_args") or {}),
            class_changes=tuple(ClassChangeEntry.from_dict(c) for c in d.get("class_changes") or ()),
            latency=LatencyEntry.from_dict(d["latency"]) if d.get("latency") else None,
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form: plain data with ``"version"``; empty optional entries are left out, as before."""
        d: dict[str, Any] = {
            **self.extra,
            "version": VERSION,
            "config": dict(self.config),
            "params": list(self.params),
            "macs": list(self.macs),
            "channels": {k: list(v) for k, v in self.channels.items()},
            "seconds": self.seconds,
            "feature_channels": self.feature_channels.to_dict(),
        }
        for key in ("source", "source_sha256", "date"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.base_train_args:
            d["base_train_args"] = dict(self.base_train_args)
        if self.class_changes:
            d["class_changes"] = [c.to_dict() for c in self.class_changes]
        if self.latency is not None:
            d["latency"] = self.latency.to_dict()
        return d


def _pair(value: Any, kind: type) -> tuple:
    if not value:
        return (kind(0), kind(0))
    a, b = value
    return (kind(a), kind(b))


def read_history(model: nn.Module) -> list[PruningRecord]:
    """Every pruning applied to ``model``, oldest first (empty for a network never pruned).

    Raises:
        RecordError: a record written by a newer yolo_ext, or an attribute that is not a list of records.
    """
    stored = getattr(model, ATTRIBUTE, None) or []
    if not isinstance(stored, (list, tuple)):
        raise RecordError(f"{ATTRIBUTE} must be a list of pruning records, got {type(stored).__name__}.")
    return [PruningRecord.from_dict(d) for d in stored]


def write_history(model: nn.Module, history: list[PruningRecord]) -> None:
    """Store ``history`` on ``model`` (plain data); an empty history removes the attribute."""
    if history:
        setattr(model, ATTRIBUTE, [r.to_dict() for r in history])
    elif hasattr(model, ATTRIBUTE):
        delattr(model, ATTRIBUTE)


def append(model: nn.Module, record: PruningRecord) -> None:
    """Add one pruning to ``model``'s history."""
    write_history(model, [*read_history(model), record])


def is_pruned(model: nn.Module) -> bool:
    """Whether ``model`` carries a pruning record."""
    return bool(getattr(model, ATTRIBUTE, None))


def times_pruned(model: nn.Module) -> int:
    """How many prunings ``model``'s history holds."""
    return len(getattr(model, ATTRIBUTE, None) or [])


def note_class_change(model: nn.Module, change: ClassChangeEntry) -> bool:
    """Note a class-set change in the latest record (a network never pruned gets no record); True if noted."""
    history = read_history(model)
    if not history:
        return False
    last = history[-1]
    write_history(model, [*history[:-1], replace(last, class_changes=(*last.class_changes, change))])
    return True


def base_train_args(ckpt: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Train args of the network before its first pruning (a fine-tuned checkpoint's own ``train_args`` describe
    the fine-tuning, not the base training), else the checkpoint's."""
    for record in read_history(model):
        if record.base_train_args:
            return dict(record.base_train_args)
    return dict(ckpt.get("train_args") or {})


def ancestor_digests(model: nn.Module) -> list[str]:
    """The recorded digests of the networks ``model`` was pruned from (none for records older than them)."""
    return [r.source_sha256 for r in read_history(model) if r.source_sha256]
