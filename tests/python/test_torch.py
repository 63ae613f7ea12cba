# nabla.torch: a nabla model's loss and symbolic gradient inside a PyTorch autograd graph.
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nabla            # noqa: E402
import nabla.torch      # noqa: E402
import nets             # noqa: E402


def test_gradcheck_f64(samples):
    m = nabla.compile(samples / "hinton.nn", dtype="f64")
    x, t = nets.batch(4, 2, 5, seed=3)
    params = [torch.tensor(v, requires_grad=True) for v in m.init_params(2).values()]
    fn = lambda *ps: nabla.torch.Function.apply(m, torch.tensor(x), torch.tensor(t), *ps)  # noqa: E731
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_random_program():
    source, fn_ref, n_in, n_out, classes = nets.random_program(5)
    m = nabla.compile_string(source, dtype="f64")
    x, t = nets.batch(n_in, n_out, 4, 5, classes)
    params = [torch.tensor(v, requires_grad=True) for v in m.init_params(1).values()]
    fn = lambda *ps: nabla.torch.Function.apply(m, x, t, *ps)  # noqa: E731
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_module_matches_autograd(samples):
    m = nabla.compile(samples / "hinton.nn", dtype="f64")
    layer = nabla.torch.Module(m, seed=1)
    x, t = nets.batch(4, 2, 7, seed=4)
    loss = layer(torch.tensor(x), torch.tensor(t))
    loss.backward()
    _, loss_ref, grads_ref = nets.torch_reference(nets.hinton_torch, m.init_params(1), x, t)
    assert abs(loss.item() - loss_ref) < 1e-12
    for attr, name in layer.param_names.items():
        assert np.allclose(getattr(layer, attr).grad.numpy(), grads_ref[name], rtol=0, atol=1e-12)
    out = layer.outputs(torch.tensor(x))["y_j"]
    assert out.shape == (7, 2) and not out.requires_grad


def test_trains_inside_a_torch_loop(samples):
    # The digits network as the loss head of a PyTorch model: a PyTorch scale in front of it (a
    # layer on the inputs would need gradients with respect to them, which nabla does not give;
    # see the module's doc), an L2 penalty on its params computed by PyTorch, torch.optim.Adam.
    m = nabla.compile(samples / "digits.nn")
    d = np.loadtxt(samples / "data" / "digits.csv", delimiter=",", skiprows=1, max_rows=512)
    x, labels = torch.tensor(d[:, :64], dtype=torch.float32), torch.tensor(d[:, 64].astype(np.int64))
    layer = nabla.torch.Module(m)
    assert {"h__W", "h__b", "y__W", "y__b"} == set(layer.param_names)
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    losses = []
    for epoch in range(4):
        for i in range(0, 512, 64):
            opt.zero_grad()
            loss = layer(x[i:i + 64], labels[i:i + 64].numpy()) + \
                1e-4 * sum((p ** 2).sum() for p in layer.parameters())
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])
    trained = layer.params_dict()
    acc = (m.forward(trained, d[:, :64])["y"].argmax(1) == d[:, 64]).mean()
    assert acc > 0.85


def test_inputs_requiring_grad_are_refused(samples):
    m = nabla.compile(samples / "hinton.nn", dtype="f64")
    layer = nabla.torch.Module(m)
    with pytest.raises(ValueError, match="params only"):
        layer(torch.ones(2, 4, dtype=torch.float64, requires_grad=True), torch.ones(2, 2, dtype=torch.float64))
