"""nabla: compile `.nn` networks and run them on NumPy arrays.

    import numpy as np, nabla
    m = nabla.compile("samples/hinton.nn")          # dtype="f32"|"f64", engine="jit"|"interp", opt_level=0..3
    params = m.init_params(seed=0)                   # dict name -> ndarray (the model's dtype)
    loss, grads = m.loss_and_grad(params, x, t)      # x: (n, 4), t: (n, 2); or dicts name -> array
    outputs = m.forward(params, x)                   # dict name -> (n, ...) arrays
    params, history, summary = nabla.train(m, x, t, epochs=20, optimizer="adam")
    nabla.save_params(m, params, "p.json"); params = nabla.load_params(m, "p.json")

Arrays have the batch first. C-contiguous arrays of the model's dtype are read in place; anything
else is converted once. The GIL is released while compiled code runs. `nabla.torch` wraps a model
as a PyTorch autograd function and module.
"""

import re as _re

from . import _nabla

__all__ = ["CompileError", "Model", "compile", "compile_string", "train", "load_params", "save_params"]


class CompileError(Exception):
    """A program that does not compile. str(e) is the compiler's text, `FILE:LINE:COL: error: ...`
    (all its diagnostics, one a line); `file`, `line` and `column` locate the first one (None
    where the error has no position, e.g. a file that cannot be read)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message
        self.file = self.line = self.column = None
        first = message.splitlines()[0] if message else ""
        m = _re.match(r"^(.*?):(\d+):(\d+): error", first)
        if m:
            self.file, self.line, self.column = m.group(1), int(m.group(2)), int(m.group(3))
        else:
            m = _re.match(r"^(.*?): error", first)
            if m:
                self.file = m.group(1)


_nabla._CompileError = CompileError
Model = _nabla.Model


def compile(path, *, dtype="f32", engine="jit", opt_level=2):
    """Compiles the `.nn` file at `path` into a Model. Raises CompileError."""
    import os
    return _nabla._compile(os.fspath(path), True, "", dtype, engine, opt_level)


def compile_string(source, name="<string>", *, dtype="f32", engine="jit", opt_level=2):
    """Compiles `.nn` source text; `name` stands for the file name in messages."""
    return _nabla._compile(source, False, name, dtype, engine, opt_level)


def train(model, inputs=None, targets=None, *, params=None, epochs=10, batch=32, optimizer="sgd",
          lr=None, lr_schedule="constant", seed=0, threads=1, valid_fraction=0.0, test_inputs=None, test_targets=None,
          verbose=True, on_epoch=None):
    """Trains `model` as `nabla train` does (the same optimizers, options and, for the same
    options and data, the same params bit for bit) on `inputs` and `targets` (arrays with the
    batch first, or dicts of them; an integer vector of class indices for a target of K classes).

    `params`: the start (default: model.init_params(seed)). `optimizer`: "sgd", "momentum" or
    "adam"; `lr` defaults to 0.1, 0.01 and 0.001 for them. `lr_schedule`: "constant", "cosine"
    or "linear", a decay from `lr` towards 0 over all the run's steps. `valid_fraction` holds out a seeded
    share of the rows; `test_inputs`/`test_targets` are evaluated after every epoch. `verbose`
    prints the CLI's progress lines to sys.stderr; `on_epoch(stats)` is called after every epoch
    (an exception in it stops training and propagates). Ctrl-C stops training.

    Returns (params, history, summary): the trained params (dict name -> ndarray), one dict per
    epoch (epoch, train_loss, valid_loss, valid_accuracy, test_loss, test_accuracy, seconds,
    elapsed, examples_per_second, lr (the last step's); None where a value does not exist) and the final evaluation
    (train/valid/test loss and accuracy of the final params, rows, seconds)."""
    return model._train(inputs, targets, params, int(epochs), int(batch), optimizer,
                        None if lr is None else float(lr), str(lr_schedule), int(seed), int(threads),
                        float(valid_fraction), test_inputs, test_targets, bool(verbose), on_epoch)


def load_params(model, path):
    """Reads a params file (JSON, as `nabla train --save` writes) for `model`: dict name -> ndarray.
    Raises ValueError with the file's error (`FILE: error: param "W": expected 3 rows, found 2`)."""
    import os
    return model.load_params(os.fspath(path))


def save_params(model, params, path):
    """Writes `params` as a JSON params file that `nabla eval --params` and load_params read back
    exactly. Written to a temporary file beside `path` and renamed over it."""
    import os
    text = model._format_params(params)
    path = os.fspath(path)
    tmp = path + ".tmp-%d" % os.getpid()
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _save_params_method(self, params, path):
    save_params(self, params, path)


Model.save_params = _save_params_method
