"""PyTorch interop: a nabla model's loss, with its symbolic gradient, inside an autograd graph.

    import torch, nabla, nabla.torch
    m = nabla.compile("samples/digits.nn", dtype="f64")
    layer = nabla.torch.Module(m)                 # the params as torch Parameters (init_params(seed))
    opt = torch.optim.Adam(layer.parameters())
    loss = layer(x, t) + 1e-4 * sum((p ** 2).sum() for p in layer.parameters())
    loss.backward(); opt.step()

nabla differentiates a program's loss with respect to its params, so the autograd node gives
gradients for the params only: the inputs and targets must not require gradients (a ValueError
says so), i.e. the nabla network is the last part of the graph (a loss head), while its params
may be shared with, regularized by or produced by other PyTorch code. The forward outputs are
available without gradients through `Module.outputs`.
"""

import numpy as _np
import torch as _torch

__all__ = ["Function", "Module", "forward"]


def _numpy_batch(value, what, dtype):
    """A tensor (CPU, no gradient required), an ndarray, a dict of them or None, as NumPy."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _numpy_batch(v, "%s '%s'" % (what, k), dtype) for k, v in value.items()}
    if isinstance(value, _torch.Tensor):
        if value.requires_grad:
            raise ValueError("%s requires a gradient, but nabla differentiates the loss with respect to "
                             "the params only: detach it, or compute it without gradients" % what)
        value = value.detach()
        if value.dtype.is_floating_point and value.dtype != dtype:
            value = value.to(dtype)
        return value.cpu().numpy()  # shares the tensor's memory when on the CPU
    return value


def _torch_dtype(model):
    return _torch.float64 if model.dtype == _np.float64 else _torch.float32


class Function(_torch.autograd.Function):
    """loss = Function.apply(model, inputs, targets, *params): the model's loss (a 0-d tensor)
    for the params given as tensors in the order of model.params; its backward multiplies the
    model's symbolic gradient by the incoming gradient. inputs and targets as for
    Model.loss_and_grad (tensors or arrays, or dicts of them)."""

    @staticmethod
    def forward(ctx, model, inputs, targets, *params):
        names = list(model.params)
        if len(params) != len(names):
            raise ValueError("expected %d params (%s), got %d" % (len(names), ", ".join(names), len(params)))
        dtype = _torch_dtype(model)
        p = {}
        for name, t in zip(names, params):
            if not isinstance(t, _torch.Tensor):
                raise TypeError("param '%s': expected a tensor" % name)
            p[name] = t.detach().to(dtype).cpu().numpy()
        loss, grads = model.loss_and_grad(p, _numpy_batch(inputs, "input", dtype),
                                          _numpy_batch(targets, "target", dtype))
        ctx.grads = [_torch.from_numpy(grads[n]).to(device=t.device, dtype=t.dtype) for n, t in zip(names, params)]
        ref = params[0] if params else None
        return _torch.tensor(loss, dtype=ref.dtype if ref is not None else dtype,
                             device=ref.device if ref is not None else None)

    @staticmethod
    def backward(ctx, grad_loss):
        return (None, None, None) + tuple(grad_loss * g for g in ctx.grads)


def forward(model, params, inputs=None):
    """The model's outputs (dict name -> tensor, no gradients) for params given as a dict of
    tensors or arrays."""
    dtype = _torch_dtype(model)
    p = {k: (v.detach().to(dtype).cpu().numpy() if isinstance(v, _torch.Tensor) else v) for k, v in params.items()}
    out = model.forward(p, _numpy_batch(inputs, "input", dtype))
    return {k: _torch.from_numpy(_np.ascontiguousarray(v)) for k, v in out.items()}


class Module(_torch.nn.Module):
    """A nabla model as a PyTorch module: its params are torch Parameters (from `params`, a dict
    of arrays, or else model.init_params(seed)); calling it with (inputs, targets) returns the loss
    as a tensor that PyTorch's autograd differentiates with respect to those Parameters.

    nn.Module names cannot hold '.', so a param "h.W" is the attribute "h__W"; `param_names`
    maps the module's names to the program's."""

    def __init__(self, model, params=None, seed=0):
        super().__init__()
        self.model = model
        if params is None:
            params = model.init_params(seed)
        self._names = list(model.params)
        self.param_names = {}
        for name in self._names:
            attr = name.replace(".", "__")
            self.param_names[attr] = name
            self.register_parameter(attr, _torch.nn.Parameter(_torch.from_numpy(_np.array(params[name], copy=True))))

    def _params(self):
        return [getattr(self, a) for a in self.param_names]

    def params_dict(self):
        """The current params as a dict program name -> ndarray (copies), e.g. for nabla.save_params."""
        return {self.param_names[a]: getattr(self, a).detach().cpu().numpy().copy() for a in self.param_names}

    def forward(self, inputs=None, targets=None):
        return Function.apply(self.model, inputs, targets, *self._params())

    def outputs(self, inputs=None):
        """The network's outputs for `inputs` (dict name -> tensor), without gradients."""
        return forward(self.model, dict(zip(self._names, self._params())), inputs)
