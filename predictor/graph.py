"""Shared ONNX graph-building helper: the one both the heads (export.py) and the MiniLM
encoder (encoder.py) use to add constants, so neither module imports the other for it."""

from __future__ import annotations

import numpy as np


def add_initializer(nodes: list, inits: list, arr: np.ndarray, name: str, fp16: bool) -> str:
    """Add `arr` as a graph constant named `name`; big float32 matrices are stored as float16
    and cast back at load (half the file size) when `fp16` is set."""
    from onnx import TensorProto, helper, numpy_helper

    if fp16 and arr.dtype == np.float32 and arr.size > 4096:
        inits.append(numpy_helper.from_array(arr.astype(np.float16), name + "_h"))
        nodes.append(helper.make_node("Cast", [name + "_h"], [name], to=TensorProto.FLOAT))
    else:
        inits.append(numpy_helper.from_array(arr, name))
    return name
