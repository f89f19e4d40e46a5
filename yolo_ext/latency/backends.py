"""Runtimes a pruned network is timed on, by name: one :class:`Backend` per runtime in :data:`BACKENDS`.

A backend turns a deployed network (:func:`yolo_ext.latency.deploy.deployed_copy`) into a :class:`Runner`: one call
runs one inference on a fixed input, and :meth:`Runner.layer_ms` says how long each layer took, keyed by the module
name it came from (``model.5.conv``), so the per-layer latency table (:mod:`yolo_ext.latency.table`) can be built
from the runtime's own profiler instead of from MACs. Runtime packages are optional extras: a backend whose package
or device is missing refuses with the command that installs it. :func:`register_backend` adds one (the tests use a
fake runtime with a known cost model).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from yolo_ext.latency.deploy import Deployment, export_onnx
from yolo_ext.latency.errors import LatencyError


class Runner(ABC):
    """One deployed network on one runtime, ready to run on a fixed input."""

    @abstractmethod
    def __call__(self) -> float | None:
        """Run one inference and wait for it to finish; return its ms if the runtime timed it itself (else None:
        the caller's wall clock is used)."""

    @abstractmethod
    def layer_ms(self, reps: int) -> dict[str, float]:
        """Milliseconds per inference spent in each module (by name, as in ``named_modules``), over ``reps`` runs.
        Time the runtime cannot place on a module is under the key ``""``."""

    def close(self) -> None:  # noqa: B027  (optional: a runner without files or sessions has nothing to release)
        """Release files and sessions."""


class Backend(ABC):
    """A runtime: its name, how to install it, its version (part of every cache key) and how to run a network."""

    name: str = ""
    summary: str = ""
    #: what to install when the runtime is missing
    install: str = ""

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (a missing package or device), or None."""
        return None

    @abstractmethod
    def version(self) -> str:
        """The runtime's version: a new version means new timings."""

    @abstractmethod
    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        """``model`` (a deployed copy) ready to time at ``deployment``."""

    def require(self) -> Backend:
        """``self``, or a :class:`LatencyError` that says what to install."""
        reason = self.unavailable()
        if reason:
            raise LatencyError(f"Backend {self.name!r} cannot run here: {reason}. {self.install}".strip())
        return self


BACKENDS: dict[str, Backend] = {}
DEFAULT_BACKEND = "ort-cpu"


def register_backend(backend: Backend, replace: bool = False) -> Backend:
    """Make ``backend`` available by its name (``--backend NAME``); a taken name needs ``replace=True``."""
    if not backend.name:
        raise LatencyError(f"{type(backend).__name__} has no name.")
    if backend.name in BACKENDS and not replace:
        raise LatencyError(f"A backend named {backend.name!r} is already registered; pass replace=True.")
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str | Backend) -> Backend:
    """The registered backend ``name`` (or ``name`` itself if it is a Backend), checked to run here."""
    if isinstance(name, Backend):
        return name.require()
    try:
        backend = BACKENDS[name]
    except KeyError:
        known = ", ".join(f"{b.name} ({b.summary})" for b in BACKENDS.values())
        raise LatencyError(f"Unknown backend {name!r}. Choose one of: {known}.") from None
    return backend.require()


def missing(*packages: str) -> str | None:
    """"openvino and onnx not installed" for those of ``packages`` that cannot be imported here, else None."""
    absent = [p for p in packages if importlib.util.find_spec(p) is None]
    return f"{' and '.join(absent)} not installed" if absent else None


# ---------------------------------------------------------------------------------------------------------------------
# Profile names -> module names
# ---------------------------------------------------------------------------------------------------------------------


def scope_to_module(name: str, modules: Iterable[str]) -> str:
    """The module an exported node came from:
    ``/model.23/cv2.0/cv2.0.0/conv/Conv_output_0`` -> ``model.23.cv2.0.0.conv``.

    torch's ONNX exporter names a node by the scopes of the modules whose forward it ran in; a scope is the module's
    name relative to the enclosing called module (``cv2.0.0`` inside ``model.23``, where the ModuleList ``cv2`` is
    never called itself). A segment that extends the previous one replaces it. The longest prefix that is a module
    name wins; ``""`` when none is (e.g. ONNX Runtime's layout reorders).
    """
    known = modules if isinstance(modules, (set, frozenset, dict)) else set(modules)
    path: list[str] = []
    for seg in name.strip("/").split("/"):
        if path and seg.startswith(path[-1] + "."):
            path[-1] = seg
        else:
            path.append(seg)
    for end in range(len(path), 0, -1):
        candidate = ".".join(path[:end])
        if candidate in known:
            return candidate
    return ""


def _by_module(times: Iterable[tuple[str, float]], modules: set[str], reps: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for node, ms in times:
        out[scope_to_module(node, modules)] += ms / reps
    return dict(out)


# ---------------------------------------------------------------------------------------------------------------------
# ONNX Runtime, OpenVINO (both run the ONNX file torch exports)
# ---------------------------------------------------------------------------------------------------------------------


class _OnnxRunner(Runner):
    """Holds the exported file in a temporary folder removed by :meth:`close`."""

    def __init__(self, model: nn.Module, deployment: Deployment) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="yolo_ext-latency-")
        self.path = export_onnx(model, Path(self._dir.name) / "model.onnx", deployment)
        self.modules = {n for n, _ in model.named_modules()}
        self.deployment = deployment
        self.x = deployment.input().numpy()

    def close(self) -> None:
        self._dir.cleanup()


class _OrtRunner(_OnnxRunner):
    def __init__(self, model: nn.Module, deployment: Deployment) -> None:
        super().__init__(model, deployment)
        self.session = self._session()
        self.feed = {self.session.get_inputs()[0].name: self.x}

    def _session(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.deployment.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

    def __call__(self) -> None:
        self.session.run(None, self.feed)

    def layer_ms(self, reps: int) -> dict[str, float]:
        session = self._session(str(Path(self._dir.name) / "profile"))
        feed = {session.get_inputs()[0].name: self.x}
        session.run(None, feed)  # warm-up, left out below
        for _ in range(reps):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
        runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
        start = runs[1]["ts"] if len(runs) > 1 else 0  # skip the warm-up run
        nodes = [
            (e["name"].removesuffix("_kernel_time"), e["dur"] / 1000)
            for e in events
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start
        ]
        return _by_module(nodes, self.modules, reps)


class OrtCpu(Backend):
    name, summary = "ort-cpu", "ONNX Runtime, CPU execution provider"
    install = "Install it with: pip install onnxruntime onnx (or pip install 'yolo_ext[export]')."

    def unavailable(self) -> str | None:
        return missing("onnxruntime", "onnx")

    def version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        return _OrtRunner(model, deployment)


class _OpenVinoRunner(_OnnxRunner):
    def __init__(self, model: nn.Module, deployment: Deployment) -> None:
        super().__init__(model, deployment)
        import openvino as ov

        self.core = ov.Core()
        self.ov_model = self.core.read_model(str(self.path))
        self.request = self._compile(False).create_infer_request()

    def _compile(self, profile: bool):
        config = {
            "INFERENCE_NUM_THREADS": self.deployment.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": profile,
        }
        return self.core.compile_model(self.ov_model, "CPU", config)

    def __call__(self) -> None:
        self.request.infer({0: self.x})

    def layer_ms(self, reps: int) -> dict[str, float]:
        request = self._compile(True).create_infer_request()
        request.infer({0: self.x})
        totals: dict[str, float] = defaultdict(float)
        for _ in range(reps):
            request.infer({0: self.x})
            for info in request.profiling_info:
                if info.status.name == "EXECUTED":
                    totals[info.node_name] += info.real_time.total_seconds() * 1000
        return _by_module(totals.items(), self.modules, reps)


class OpenVinoCpu(Backend):
    name, summary = "openvino-cpu", "OpenVINO, CPU plugin (FP32)"
    install = "Install it with: pip install openvino onnx (or pip install 'yolo_ext[openvino]')."

    def unavailable(self) -> str | None:
        return missing("openvino", "onnx")

    def version(self) -> str:
        import openvino

        return f"openvino {openvino.__version__}"

    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        return _OpenVinoRunner(model, deployment)


# ---------------------------------------------------------------------------------------------------------------------
# PyTorch (eager, fused), CPU or CUDA
# ---------------------------------------------------------------------------------------------------------------------


class _TorchRunner(Runner):
    def __init__(self, model: nn.Module, deployment: Deployment, device: str) -> None:
        self.device, self.deployment = torch.device(device), deployment
        self.model = model.to(self.device).eval()
        self.x = deployment.input().to(self.device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self) -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.deployment.threads)
        try:
            with torch.inference_mode():
                self.model(self.x)
            self._sync()
        finally:
            torch.set_num_threads(previous)

    def layer_ms(self, reps: int) -> dict[str, float]:
        """Own time of every leaf module (forward hooks around it; parents are the sum of their leaves)."""
        own: dict[str, float] = defaultdict(float)
        starts: dict[str, float] = {}
        handles = []

        def pre(name: str) -> Callable:
            def hook(*_):
                self._sync()
                starts[name] = time.perf_counter()
            return hook

        def post(name: str) -> Callable:
            def hook(*_):
                self._sync()
                own[name] += 1000 * (time.perf_counter() - starts[name])
            return hook

        for name, m in self.model.named_modules():
            if name and not any(True for _ in m.children()):
                handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
        try:
            self()  # warm-up, not kept
            own.clear()
            t = time.perf_counter()
            for _ in range(reps):
                self()
            total = 1000 * (time.perf_counter() - t)
        finally:
            for h in handles:
                h.remove()
        out = {k: v / reps for k, v in own.items()}
        out[""] = max(0.0, total / reps - sum(out.values()))
        return out


class TorchCpu(Backend):
    name, summary = "torch-cpu", "PyTorch eager on the CPU (fused FP32)"

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        return _TorchRunner(model, deployment, "cpu")


class TorchCuda(Backend):
    name, summary = "torch-cuda", "PyTorch eager on the first CUDA GPU (fused FP32)"
    install = "It needs an NVIDIA GPU and a CUDA build of torch."

    def unavailable(self) -> str | None:
        return None if torch.cuda.is_available() else "no CUDA GPU is visible to torch"

    def version(self) -> str:
        return f"torch {torch.__version__} cuda {torch.version.cuda} {torch.cuda.get_device_name(0)}"

    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        return _TorchRunner(model, deployment, "cuda")


# ---------------------------------------------------------------------------------------------------------------------
# TensorRT (FP16 engine built from the ONNX file)
# ---------------------------------------------------------------------------------------------------------------------


class _TensorRtRunner(_OnnxRunner):
    def __init__(self, model: nn.Module, deployment: Deployment) -> None:
        super().__init__(model, deployment)
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise LatencyError(f"TensorRT could not parse the exported network: {errors}")
        config = builder.create_builder_config()
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        engine_bytes = builder.build_serialized_network(network, config)
        if engine_bytes is None:
            raise LatencyError("TensorRT could not build an engine for the exported network.")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        self.buffers = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = torch.float16 if self.engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            buf = torch.zeros(tuple(self.engine.get_tensor_shape(name)), dtype=dtype, device="cuda")
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                buf.copy_(torch.from_numpy(self.x).to(dtype))
            self.buffers.append((name, buf))
        self.context = self._context()
        self.stream = torch.cuda.Stream()

    def _context(self):
        """An execution context bound to the input and output buffers."""
        context = self.engine.create_execution_context()
        for name, buf in self.buffers:
            context.set_tensor_address(name, buf.data_ptr())
        return context

    def __call__(self) -> None:
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()

    def layer_ms(self, reps: int) -> dict[str, float]:
        import tensorrt as trt

        totals: dict[str, float] = defaultdict(float)

        class Profiler(trt.IProfiler):
            def report_layer_time(self, layer_name: str, ms: float) -> None:
                # a fused layer is named after its nodes joined by " + "; its time goes to the first
                totals[layer_name.split(" + ")[0]] += ms

        context = self._context()  # profiled apart: a profiler slows every run of the context it is attached to
        context.profiler = Profiler()
        context.execute_async_v3(self.stream.cuda_stream)  # warm-up, left out below
        self.stream.synchronize()
        totals.clear()
        for _ in range(reps):
            context.execute_async_v3(self.stream.cuda_stream)
            self.stream.synchronize()
        return _by_module(totals.items(), self.modules, reps)


class TensorRt(Backend):
    name, summary = "tensorrt", "NVIDIA TensorRT FP16 engine on the first CUDA GPU"
    install = "Install it with: pip install tensorrt onnx (it needs an NVIDIA GPU)."

    def unavailable(self) -> str | None:
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch"
        return missing("tensorrt", "onnx")

    def version(self) -> str:
        import tensorrt

        return f"tensorrt {tensorrt.__version__} {torch.cuda.get_device_name(0)}"

    def runner(self, model: nn.Module, deployment: Deployment) -> Runner:
        return _TensorRtRunner(model, deployment)


for _backend in (OrtCpu(), OpenVinoCpu(), TorchCpu(), TorchCuda(), TensorRt()):
    register_backend(_backend)
