"""Latency measurement and latency-aware pruning: cache keys, channel multiples, the target search on a fake runtime
with a known cost model, backend refusals, and the real ONNX Runtime / OpenVINO paths on a small input."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.tasks import DetectionModel

import yolo_ext  # noqa: F401
from yolo_ext.latency import (
    BACKENDS,
    Backend,
    Deployment,
    LatencyError,
    Runner,
    deployed_copy,
    get_backend,
    measure_latency,
    register_backend,
)
from yolo_ext.latency.backends import scope_to_module
from yolo_ext.latency.costs import MacsCost, conv_shapes
from yolo_ext.latency.multiples import choose_multiple, measure_multiple
from yolo_ext.latency.table import (
    LatencyTable,
    architecture,
    cache_path,
    load_or_build_table,
    nnls,
    read_cache,
    table_key,
    unit_of,
    write_cache,
)
from yolo_ext.prune import PruneConfig, PruningError, prune_model

# ---------------------------------------------------------------------------------------------------------------------
# A fake runtime whose latency is a known function of the network's conv widths
# ---------------------------------------------------------------------------------------------------------------------

BLOCK = 16  # the fake runtime computes channels in blocks of 16 (like AVX-512 CPUs)
MS_PER_GMAC = 20.0


def fake_conv_ms(cin: int, cout: int, groups: int, k: int, hw: int) -> float:
    """Known cost: MACs at widths rounded up to the block, plus a fixed 0.02 ms per conv."""
    blk = lambda c: BLOCK * math.ceil(c / BLOCK)  # noqa: E731
    if groups > 1 and groups == cin == cout:
        macs = blk(cout) * k * hw
    else:
        macs = blk(cin // groups) * blk(cout) * k * hw
    return 0.02 + MS_PER_GMAC * macs / 1e9


class FakeRunner(Runner):
    def __init__(self, model: nn.Module, deployment: Deployment) -> None:
        if isinstance(model, DetectionModel):
            self.convs = {n: s for n, s in conv_shapes(model, deployment.imgsz).items()}
        else:  # the channel-multiple probe: plain convs at the deployment's map size
            hw = deployment.imgsz[0] * deployment.imgsz[1]
            self.convs = {n: type("S", (), {"cin": m.in_channels, "cout": m.out_channels, "groups": m.groups,
                                            "k": m.kernel_size[0] * m.kernel_size[1], "hw": hw})()
                          for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        self.layers = {n: fake_conv_ms(s.cin, s.cout, s.groups, s.k, s.hw) for n, s in self.convs.items()}
        self.ms = 0.5 + sum(self.layers.values())  # 0.5 ms the profiler cannot place (the rest)

    def __call__(self) -> float:
        return self.ms  # the runtime reports its own time (as a GPU runner would from events): no clock noise

    def layer_ms(self, reps: int) -> dict[str, float]:
        return {**self.layers, "": 0.5}


class FakeBackend(Backend):
    name, summary = "fake-test", "known cost model (tests)"
    built = 0

    def version(self) -> str:
        return "fake 1.0"

    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        type(self).built += 1
        return FakeRunner(model, deployment)


@pytest.fixture
def fake_backend():
    backend = register_backend(FakeBackend(), replace=True)
    FakeBackend.built = 0
    yield backend
    BACKENDS.pop(backend.name, None)


@pytest.fixture(scope="module")
def yolo11n() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel("yolo11n.yaml", verbose=False).eval()


def fake_ms(model: nn.Module, imgsz: int) -> float:
    return FakeRunner(deployed_copy(model), Deployment((imgsz, imgsz))).ms


# ---------------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------------


def test_scope_names_map_to_modules(yolo11n):
    modules = {n for n, _ in yolo11n.named_modules()}
    assert scope_to_module("/model.23/cv2.0/cv2.0.0/conv/Conv_output_0_nchwc", modules) == "model.23.cv2.0.0.conv"
    assert scope_to_module("/model.0/act/Mul/QuickGeluFusion/", modules) == "model.0.act"
    assert scope_to_module("/model.10/m/m.0/attn/MatMul", modules) == "model.10.m.0.attn"
    assert scope_to_module("ReorderOutput_token_341", modules) == ""
    convs = {"model.5.conv": 1, "model.23.dfl.conv": 1}
    assert unit_of("model.5.act", convs) == "model.5.conv"
    assert unit_of("model.5", convs) == "model.5.conv"
    assert unit_of("model.23.dfl", convs) == "model.23.dfl.conv"
    assert unit_of("model.15", convs) == ""


def test_nnls_keeps_coefficients_non_negative():
    x = torch.tensor([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]).numpy()
    assert nnls(x, x @ [2.0, 3.0]).round(6).tolist() == [2.0, 3.0]
    coef = nnls(x, x @ [5.0, -1.0])  # the unconstrained fit has a negative slope
    assert (coef >= 0).all() and coef[1] == 0


@pytest.mark.parametrize("block", [8, 16, 32])
def test_multiple_is_the_block_the_runtime_computes_in(block):
    ms = {c: 1.0 + math.ceil(c / block) for c in range(36, 101, 4)}
    assert choose_multiple(ms) == block
    noisy = {c: t * (1.03 if c % 3 == 0 else 1.0) for c, t in ms.items()}  # a little noise changes nothing
    assert choose_multiple(noisy) == block


def test_multiple_when_every_channel_costs():
    assert choose_multiple({c: 0.1 * c for c in range(36, 101, 4)}) == 4  # linear: snap as finely as allowed


def test_measured_multiple_on_the_fake_runtime_is_cached(fake_backend):
    first = measure_multiple(fake_backend, Deployment((320, 320)))
    assert first.multiple == BLOCK and not first.cached
    built = FakeBackend.built
    again = measure_multiple(fake_backend, Deployment((320, 320)))
    assert again.cached and again.multiple == BLOCK and FakeBackend.built == built  # nothing timed again


# ---------------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------------


def test_cache_key_covers_what_changes_timings(yolo11n, fake_backend):
    d = Deployment((320, 320))
    key = table_key(yolo11n, fake_backend, d, 16)
    assert table_key(yolo11n, fake_backend, d, 16) == key
    other = DetectionModel("yolo11s.yaml", verbose=False)
    changed = [
        table_key(other, fake_backend, d, 16),
        table_key(yolo11n, fake_backend, Deployment((640, 640)), 16),
        table_key(yolo11n, fake_backend, Deployment((320, 320), batch=2), 16),
        table_key(yolo11n, fake_backend, Deployment((320, 320), threads=4), 16),
        table_key(yolo11n, fake_backend, d, 8),
        table_key(yolo11n, get_backend("torch-cpu"), d, 16),
    ]
    assert all(k != key for k in changed)
    assert len({cache_path(k) for k in [key, *changed]}) == len(changed) + 1
    assert architecture(yolo11n) != architecture(other)


def test_cache_rejects_other_keys_and_damaged_files(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_EXT_CACHE", str(tmp_path))
    key = {"backend": "x", "runtime": "1", "imgsz": [320, 320]}
    path = write_cache(key, {"units": {}, "rest": [0, 0]})
    assert path.parent.parent == tmp_path and read_cache(key)["rest"] == [0, 0]
    assert read_cache({**key, "runtime": "2"}) is None  # a new runtime version: not this file
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "key": {**key, "imgsz": [640, 640]}}))  # a file stored under another key
    assert read_cache(key) is None
    path.write_text("{ not json")
    assert read_cache(key) is None
    assert not list(path.parent.glob(".*.tmp"))


def test_table_is_built_once_then_read_from_the_cache(yolo11n, fake_backend, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_EXT_CACHE", str(tmp_path))
    d = Deployment((128, 128))
    calls = []

    def probes():
        calls.append(1)
        return [yolo11n]

    table, cached = load_or_build_table(yolo11n, fake_backend, d, 16, probes, progress=False)
    assert not cached and calls == [1]
    table2, cached2 = load_or_build_table(yolo11n, fake_backend, d, 16, probes, progress=False)
    assert cached2 and calls == [1] and table2.units == table.units
    # another runtime version invalidates it
    monkeypatch.setattr(FakeBackend, "version", lambda self: "fake 2.0")
    _, cached3 = load_or_build_table(yolo11n, fake_backend, d, 16, probes, progress=False)
    assert not cached3 and calls == [1, 1]


def test_table_fits_the_known_costs(yolo11n, fake_backend):
    d = Deployment((128, 128))
    from yolo_ext.latency.table import measure_probes
    from yolo_ext.prune.budget import _probes
    from yolo_ext.prune.engine import _prune

    probes = _probes(yolo11n, PruneConfig(imgsz=128, round_to=16), _prune)
    table = LatencyTable.fit({}, measure_probes(probes, fake_backend, d, reps=1))
    predicted = table.cost_model().total(conv_shapes(deployed_copy(yolo11n), d.imgsz))
    assert predicted == pytest.approx(fake_ms(yolo11n, 128), rel=0.02)
    assert all(a >= 0 and b >= 0 and c >= 0 for a, b, c in table.units.values())


# ---------------------------------------------------------------------------------------------------------------------
# Allocation and the target search
# ---------------------------------------------------------------------------------------------------------------------


def test_cost_allocation_reaches_a_macs_target_at_the_multiple(yolo11n):
    import copy

    model = copy.deepcopy(yolo11n)
    result = prune_model(model, PruneConfig(criterion="lamp", allocation="cost", target_macs=0.5, round_to=16,
                                            imgsz=128))
    assert 1 - result.macs_after / result.macs_before == pytest.approx(0.5, abs=0.03)
    changed = [n for n, c in result.channels_after.items() if c != result.channels_before[n]]
    assert changed
    # every pruned group root is a multiple of 16 (halves of a split cv1 are roots: their sum is a multiple of 32)
    assert all(result.channels_after[n] % 16 == 0 for n in changed)
    assert all(result.channels_after[n] >= 0.2 * result.channels_before[n] for n in changed)  # max_layer_ratio 0.8


def test_latency_target_converges_on_the_fake_runtime(yolo11n, fake_backend, tmp_path, monkeypatch):
    import copy

    monkeypatch.setenv("YOLO_EXT_CACHE", str(tmp_path))
    model = copy.deepcopy(yolo11n)
    before = fake_ms(model, 128)
    config = PruneConfig(criterion="lamp", target_latency=0.4, backend="fake-test", imgsz=128, allocation="cost")
    result = prune_model(model, config)
    lat = result.latency
    assert lat["backend"] == "fake-test" and lat["multiple"] == BLOCK and lat["allocation"] == "cost"
    assert abs(lat["off_target"]) <= 0.05 * 0.6 + 1e-9
    # re-measured here, with the known cost model: within 5% of 60% of the original
    assert fake_ms(model, 128) / before == pytest.approx(0.6, rel=0.05)
    changed = [n for n, c in result.channels_after.items() if c != result.channels_before[n]]
    assert changed and all(result.channels_after[n] % BLOCK == 0 for n in changed)
    assert lat["table"] == "measured"  # the per-layer table: measured once, then read from the cache
    again = prune_model(copy.deepcopy(yolo11n), config)
    assert again.latency["table"] == "cached" and again.channels_after == result.channels_after


def test_latency_target_by_ratio_reports_where_it_landed(yolo11n, fake_backend):
    """Torch-Pruning's ranking at a searched ratio moves in steps (whole blocks in many layers at once), so it may
    not land within the tolerance: what it reports must be what the network measures."""
    import copy

    model = copy.deepcopy(yolo11n)
    before = fake_ms(model, 128)
    result = prune_model(model, PruneConfig(criterion="l1", target_latency=0.3, backend="fake-test", imgsz=128,
                                            allocation="ratio"))
    lat = result.latency
    assert lat["allocation"] == "ratio" and lat["table"].startswith("not used") and 1 <= len(lat["tries"]) <= 6
    assert lat["off_target"] == pytest.approx(fake_ms(model, 128) / before / 0.7 - 1, abs=1e-3)
    assert lat["ms"] < lat["base_ms"] and lat["first_try"] == "estimated"
    # the next search of this network starts where this one ended
    again = prune_model(copy.deepcopy(yolo11n), PruneConfig(criterion="l1", target_latency=0.3, backend="fake-test",
                                                            imgsz=128, allocation="ratio")).latency
    assert again["first_try"] == "where the last search ended" and again["tries"][0]["knob"] == pytest.approx(
        result.config.ratio, abs=1e-4)
    assert len(again["tries"]) <= len(lat["tries"])


def test_unreachable_budget_is_refused(yolo11n):
    import copy

    with pytest.raises(PruningError, match="Cannot reach the MACs budget.*max_layer_ratio"):
        prune_model(copy.deepcopy(yolo11n), PruneConfig(allocation="cost", target_macs=0.9, imgsz=128,
                                                        max_layer_ratio=0.3, round_to=16))


# ---------------------------------------------------------------------------------------------------------------------
# Backends: refusals and the real runtimes
# ---------------------------------------------------------------------------------------------------------------------


class MissingBackend(Backend):
    name, summary = "missing-test", "a runtime that is not installed"
    install = "Install it with: pip install missing-runtime."

    def unavailable(self):
        return "missing-runtime not installed"

    def version(self):
        return "0"

    def runner(self, model, deployment):
        raise AssertionError("never called")


def test_missing_backend_is_refused_with_what_to_install(yolo11n):
    register_backend(MissingBackend(), replace=True)
    try:
        with pytest.raises(LatencyError, match="missing-runtime not installed.*pip install missing-runtime"):
            get_backend("missing-test")
        with pytest.raises(PruningError, match="pip install missing-runtime"):
            prune_model(yolo11n, PruneConfig(target_latency=0.3, backend="missing-test", imgsz=128))
    finally:
        BACKENDS.pop("missing-test")
    with pytest.raises(LatencyError, match="Unknown backend 'trt'.*ort-cpu.*openvino-cpu.*torch-cpu"):
        get_backend("trt")
    if not torch.cuda.is_available():
        with pytest.raises(LatencyError, match="no CUDA GPU"):
            get_backend("tensorrt")
        with pytest.raises(LatencyError, match="no CUDA GPU"):
            get_backend("torch-cuda")


@pytest.mark.parametrize("name", ["ort-cpu", "openvino-cpu", "torch-cpu"])
def test_real_backends_time_and_profile_by_module(yolo11n, name):
    backend = BACKENDS[name]
    if backend.unavailable():
        pytest.skip(backend.unavailable())
    d = Deployment((128, 128))
    lat = measure_latency([yolo11n, yolo11n], name, d, runs=3, warmup=1)
    assert len(lat.ms) == 2 and all(t > 0 for t in lat.ms)
    runner = backend.runner(deployed_copy(yolo11n), d)
    try:
        layers = runner.layer_ms(2)
    finally:
        runner.close()
    convs = {n for n, m in yolo11n.named_modules() if isinstance(m, nn.Conv2d)}
    placed = {unit_of(k, convs) for k in layers} - {""}
    assert len(placed) > 0.8 * len(convs)  # the runtime's profile lands on (almost) every conv
    assert sum(layers.values()) > 0


def test_deployment_settings_are_checked():
    for bad, pattern in ((Deployment((100, 100)), "multiple of 32"), (Deployment(batch=0), "batch"),
                         (Deployment(threads=0), "threads")):
        with pytest.raises(LatencyError, match=pattern):
            bad.check()


def test_macs_cost_counts_what_torch_pruning_counts(yolo11n):
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(yolo11n, torch.zeros(1, 3, 128, 128))
    convs = MacsCost().total(conv_shapes(yolo11n, (128, 128)))
    assert convs == pytest.approx(macs, rel=0.05)  # the rest: BN, attention matmuls, upsampling


@pytest.mark.parametrize("extra, words", [
    (("--backend", "trt"), ("Unknown backend 'trt'", "ort-cpu")),
    (("--backend", "tensorrt", "--target-latency", "0.3"), ("tensorrt",)),
    (("--target-latency", "0.3", "--prune-ratio", "0.2"), ("--prune-ratio 0.2 and --target-latency",)),
    (("--target-latency", "1.5"), ("target_latency must be in (0, 0.95)",)),
    (("--threads", "0"), ("--threads must be a whole number >= 1",)),
    (("--round-to", "fast"), ("--round-to", "positive integer or 'auto'")),
])
def test_prune_tool_refuses_bad_latency_requests(tmp_path, extra, words):
    """One line on stderr, exit code 2, nothing written (``tensorrt`` is refused here only without a GPU)."""
    import contextlib
    import io

    from tests.conftest import save_three_class
    from yolo_ext.cli.commands.prune import get_args_parser, main

    if "tensorrt" in extra and not BACKENDS["tensorrt"].unavailable():
        pytest.skip("tensorrt runs here")
    source = save_three_class("yolo11n.yaml", tmp_path / "best.pt")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(get_args_parser().parse_args(["--model-path", str(source), "--imgsz", "64", *extra]))
        except SystemExit as e:  # argparse's own refusal of a value it cannot convert
            code = e.code
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith((" ", "usage:"))]
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), err.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


class _Seq(Runner):
    """Reports the given times in turn (a runtime timing itself), counting its calls."""

    def __init__(self, *ms: float) -> None:
        self.ms, self.calls = ms, 0

    def __call__(self) -> float:
        self.calls += 1
        return self.ms[(self.calls - 1) % len(self.ms)]

    def layer_ms(self, reps):
        return {}


def test_paired_ratio_cancels_load_shared_by_a_round():
    from yolo_ext.latency.measure import interleaved_times, paired_ratio

    # the machine slows down over the measurement; in every round both networks see the same slowdown
    load = [1.0, 1.0, 3.0, 3.0, 3.0]
    base, other = _Seq(*[10 * f for f in load]), _Seq(*[6 * f for f in load])
    times = interleaved_times([base, other], runs=5, warmup=0)
    assert paired_ratio(times, 1) == pytest.approx(0.6)


def test_timed_pair_takes_more_rounds_only_when_the_ratios_spread():
    from yolo_ext.latency.measure import timed_pair

    quiet_base, quiet = _Seq(10.0), _Seq(5.0)
    assert timed_pair(quiet_base, quiet, runs=8, max_runs=32, warmup=0) == (10.0, 5.0, 0.5)
    assert quiet.calls == 8
    noisy_base, noisy = _Seq(10.0), _Seq(4.0, 6.0, 5.0)
    base_ms, ms, ratio = timed_pair(noisy_base, noisy, runs=8, max_runs=32, warmup=0)
    assert noisy.calls == 32 and ratio == pytest.approx(0.5) and base_ms == 10.0


def test_nearest_multiple_keeps_narrow_layers_whole_at_a_small_ratio():
    """Torch-Pruning rounds a layer's kept width down to the multiple: one channel less halves 32 channels at x16."""
    from yolo_ext.prune.engine import NearestMultiplePruner

    down, nearest = tp.pruner.BasePruner._round_to, NearestMultiplePruner._round_to
    assert down(None, 1, 32, 16) == 16 and nearest(None, 1, 32, 16) == 0
    assert nearest(None, 8, 32, 16) == 0 and nearest(None, 9, 32, 16) == 16  # 24 kept rounds up, 23 down
    assert nearest(None, 9, 64, 16) == 16 and nearest(None, 15, 16, 16) == 0  # never below one multiple
    assert nearest(None, 0, 8, 16) == 0  # narrower than the multiple: left as it is


def test_latency_search_rounds_to_nearest_when_rounding_down_jumps_over_the_goal(yolo11n, fake_backend):
    """At x16, any ratio above 0 takes yolo11n's 32-channel layers to 16: the measured latency jumps from 100% to
    about 81%, so -10% cannot be reached by rounding down. The search then rounds widths to the nearest multiple."""
    import copy

    model = copy.deepcopy(yolo11n)
    before = fake_ms(model, 128)
    result = prune_model(model, PruneConfig(criterion="l1", target_latency=0.1, backend="fake-test", imgsz=128,
                                            allocation="ratio", round_to=16))
    lat = result.latency
    down = [t["ratio"] for t in lat["tries"] if t.get("round_mode", "down") == "down"]
    assert down and all(r == 1.0 or r < 0.9 * 0.95 for r in down)  # a step over the goal's whole tolerance
    assert lat["round_mode"] == "nearest" == result.config.round_mode
    assert abs(lat["off_target"]) <= 0.05
    assert lat["off_target"] == pytest.approx(fake_ms(model, 128) / before / 0.9 - 1, abs=1e-3)
    changed = [n for n, c in result.channels_after.items() if c != result.channels_before[n]]
    assert changed and all(result.channels_after[n] % 16 == 0 for n in changed)
