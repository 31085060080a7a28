"""The dedicated "is this dermoscopy?" network's input: the device path's decoded image, as is.

The scope network (a `.tflite` of its own beside the student, `manifest.scope_model`)
reads the decoded and scaled frame (`device_path.screen_image`'s `image`), not the
six preprocessing stages: those remove exactly what tells a phone photo from a
dermoscopy image (framing, lighting, the dermatoscope's ring). The whole frame is
squashed to a square (no crop: the surroundings are the evidence), RGB, (x - 127) / 128
as the ImageNet EfficientNet-Lite weights expect. NumPy and OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np


def scope_input(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 frame (H, W, 3) -> (1, size, size, 3) float32 in about [-1, 1]."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 image (H, W, 3), got {image_bgr.dtype} {image_bgr.shape}")
    small = cv2.resize(image_bgr, (size, size), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32)
    return ((rgb - 127.0) / 128.0)[None]


class ScopeNet:
    """The scope network's `.tflite`, run by the device's TFLite runtime: frame -> pooled features (1, D).

    `interpreter_cls` is the runtime's interpreter class (`runtime.load_interpreter_class`), so this
    module needs neither TensorFlow nor a particular runtime package.
    """

    def __init__(self, path: str, interpreter_cls: type, num_threads: int | None = 2) -> None:
        self._interpreter = interpreter_cls(model_path=str(path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        outputs = self._interpreter.get_output_details()
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or len(outputs) != 1 or len(outputs[0]["shape"]) != 2:
            raise ValueError(f"expected an image input (1, S, S, 3) and one features output (1, D), got input {shape} "
                             f"and outputs {[list(o['shape']) for o in outputs]}")
        self._output = outputs[0]
        self.input_size = shape[1]
        self.n_features = int(self._output["shape"][-1])

    def features_of_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """(1, S, S, 3) float32 input (`scope_input`) -> (1, D) features."""
        self._interpreter.set_tensor(self._input["index"], np.asarray(tensor, np.float32).reshape(1, self.input_size,
                                                                                                   self.input_size, 3))
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]), np.float32).reshape(1, -1)

    def features(self, image_bgr: np.ndarray) -> np.ndarray:
        """The decoded frame as the device path scaled it -> (1, D) features."""
        return self.features_of_tensor(scope_input(image_bgr, self.input_size))
