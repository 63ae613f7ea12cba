# The Python module against PyTorch autograd (outputs, loss and gradients of the samples and of
# random programs), zero-copy, every kind of bad argument, reference counting, threads and the GIL.
import gc
import sys
import threading
import time

import numpy as np
import pytest

import nabla
import nets


def close(a, b, tol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert err <= tol * scale, "max error %g (tolerance %g)" % (err, tol * scale)


def check_against_torch(m, fn, params, x, t, tol):
    out_ref, loss_ref, grads_ref = nets.torch_reference(fn, params, x, t)
    loss, grads = m.loss_and_grad(params, x, t)
    assert isinstance(loss, float)
    close(loss, loss_ref, tol)
    assert list(grads) == list(m.params)
    for k in grads_ref:
        assert grads[k].dtype == m.dtype and grads[k].shape == m.params[k]
        close(grads[k], grads_ref[k], tol)
    out = m.forward(params, x)
    for k in out_ref:
        close(out[k], out_ref[k], tol)


# -- compile and describe -------------------------------------------------------------------------

def test_describe_hinton(samples):
    m = nabla.compile(samples / "hinton.nn")
    assert m.params == {"W_i": (3, 4), "b_i": (3,), "W_j": (2, 3), "b_j": (2,)}
    assert m.inputs == {"x": (4,)} and m.targets == {"t": (2,)} and m.outputs == {"y_j": (2,)}
    assert m.dtype == np.float32 and m.engine == "jit" and m.has_loss
    p = m.init_params()
    assert list(p) == list(m.params) and all(p[k].shape == m.params[k] and p[k].dtype == np.float32 for k in p)
    assert all(np.array_equal(p[k], m.init_params(0)[k]) for k in p)          # deterministic
    assert not np.array_equal(p["W_i"], m.init_params(seed=1)["W_i"])
    assert nabla.compile(samples / "hinton.nn", dtype="f64").init_params()["W_i"].dtype == np.float64


def test_compile_error_has_position():
    with pytest.raises(nabla.CompileError) as e:
        nabla.compile_string("input x[4]\ny = tanh(x\n", name="bad.nn")
    assert str(e.value).startswith("bad.nn:%d:%d: error:" % (e.value.line, e.value.column))
    assert e.value.line == 2 and e.value.file == "bad.nn"
    with pytest.raises(nabla.CompileError) as e:
        nabla.compile_string("input x[4]\noutput q\n")
    assert e.value.line == 2 and e.value.column >= 1 and "<string>:2:" in str(e.value)


def test_compile_missing_file():
    with pytest.raises(nabla.CompileError) as e:
        nabla.compile("/nonexistent/net.nn")
    assert e.value.line is None and "/nonexistent/net.nn" in str(e.value) and "error" in str(e.value)


@pytest.mark.parametrize("kw,needle", [({"dtype": "f16"}, "dtype"), ({"engine": "gpu"}, "engine"),
                                       ({"opt_level": 7}, "opt_level")])
def test_compile_bad_options(samples, kw, needle):
    with pytest.raises(ValueError, match=needle):
        nabla.compile(samples / "hinton.nn", **kw)


# -- against PyTorch autograd ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [("f64", 1e-12), ("f32", 1e-5)])
@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_hinton_against_torch(samples, dtype, tol, engine):
    m = nabla.compile(samples / "hinton.nn", dtype=dtype, engine=engine)
    x, t = nets.batch(4, 2, 13, seed=1)
    check_against_torch(m, nets.hinton_torch, m.init_params(3), x, t, tol)


def digits_data(samples, rows=None):
    d = np.loadtxt(samples / "data" / "digits.csv", delimiter=",", skiprows=1, max_rows=rows)
    return d[:, :64], d[:, 64].astype(np.int64)


@pytest.mark.parametrize("dtype,tol", [("f64", 1e-12), ("f32", 1e-5)])
def test_digits_against_torch(samples, dtype, tol):
    m = nabla.compile(samples / "digits.nn", dtype=dtype)
    x, labels = digits_data(samples, 50)
    check_against_torch(m, nets.digits_torch, m.init_params(1), x, np.eye(10)[labels], tol)
    # class indices for a target of 10 classes: the same as one-hot rows
    l1, g1 = m.loss_and_grad(m.init_params(1), x, labels)
    l2, g2 = m.loss_and_grad(m.init_params(1), x, np.eye(10)[labels])
    assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_against_torch(seed):
    source, fn, n_in, n_out, classes = nets.random_program(seed)
    x, t = nets.batch(n_in, n_out, 1 + seed % 7, seed, classes)
    for dtype, tol in (("f64", 1e-12), ("f32", 1e-5)):
        m = nabla.compile_string(source, "random%d.nn" % seed, dtype=dtype)
        check_against_torch(m, fn, m.init_params(seed), x, t, tol)


def test_threads_split_agrees(samples):
    m = nabla.compile(samples / "digits.nn", dtype="f64")
    x, labels = digits_data(samples, 101)
    p = m.init_params()
    l1, g1 = m.loss_and_grad(p, x, labels)
    l3, g3 = m.loss_and_grad(p, x, labels, threads=3)
    assert abs(l1 - l3) < 1e-12 and all(np.allclose(g1[k], g3[k], rtol=0, atol=1e-12) for k in g1)
    l3b, g3b = m.loss_and_grad(p, x, labels, threads=3)
    assert l3 == l3b and all(np.array_equal(g3[k], g3b[k]) for k in g3)   # deterministic
    with pytest.raises(ValueError, match="threads"):
        m.loss_and_grad(p, x, labels, threads=0)


def test_several_inputs_and_no_inputs():
    src = ("input a[2]\ninput b[3]\ntarget t[1]\nparam u[1, 2]\nparam v[1, 3]\n"
           "y = u @ a + v @ b\noutput y\nloss E = sum((y - t)^2)\n")
    m = nabla.compile_string(src, dtype="f64")
    p = {"u": np.array([[1.0, 2.0]]), "v": np.array([[3.0, 4.0, 5.0]])}
    a, b = np.array([[1.0, 1.0], [0.0, 2.0]]), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    out = m.forward(p, {"a": a, "b": b})["y"]
    assert np.array_equal(out, (a @ p["u"].T + b @ p["v"].T))
    with pytest.raises(TypeError, match="2 inputs"):
        m.forward(p, a)
    rosen = nabla.compile_string("param x ~ normal(0, 1)\nparam y\nloss L = (1 - x)^2 + 100 * (y - x^2)^2\n", dtype="f64")
    loss, g = rosen.loss_and_grad({"x": np.float64(0.5), "y": np.float64(0.0)})
    assert loss == pytest.approx(0.25 + 100 * 0.0625, rel=1e-15)
    assert g["x"] == pytest.approx(-2 * 0.5 - 400 * 0.5 * (0.0 - 0.25), rel=1e-15)
    assert g["y"] == pytest.approx(200 * (0.0 - 0.25), rel=1e-15)


# -- zero copy --------------------------------------------------------------------------------------

def test_zero_copy(samples):
    m = nabla.compile(samples / "hinton.nn")            # f32
    p = m.init_params()
    x = np.ones((5, 4), np.float32)
    t = np.zeros((5, 2), np.float32)
    loss, grads, (p_copied, x_copied, t_copied) = m._loss_and_grad_stats(p, x, t)
    assert (p_copied, x_copied, t_copied) == (False, False, False)
    # gradients are views of one buffer in the flat layout: usable as params without a copy
    assert m._loss_and_grad_stats(grads, x, t)[2][0] is False
    assert m._loss_and_grad_stats(p, x.astype(np.float64), t)[2] == (False, True, False)      # dtype
    assert m._loss_and_grad_stats(p, np.asfortranarray(x), t)[2] == (False, True, False)    # order
    assert m._loss_and_grad_stats(p, x[:, :], t[::1])[2] == (False, False, False)
    p2 = {k: v.copy() for k, v in p.items()}                                                # separate buffers
    assert m._loss_and_grad_stats(p2, x, t)[2][0] is True
    # the results do not depend on the path
    l2, g2, _ = m._loss_and_grad_stats(p2, np.asfortranarray(x.astype(np.float64)), t.tolist())
    assert l2 == loss and all(np.array_equal(g2[k], grads[k]) for k in grads)
    assert m._loss_and_grad_stats(p, x, t.tolist())[2] == (False, False, True)            # a list
    out, (pc, xc) = m._forward_stats(p, x)
    assert (pc, xc) == (False, False)
    # The compiled code reads the caller's memory: a change to x is seen by the next call.
    x2 = x.copy()
    before = m.forward(p, x2)["y_j"].copy()
    x2[0, 0] = 5.0
    assert not np.array_equal(m.forward(p, x2)["y_j"][0], before[0])


# -- bad arguments ----------------------------------------------------------------------------------

def test_bad_arguments(samples):
    m = nabla.compile(samples / "hinton.nn")
    p = m.init_params()
    x, t = np.ones((3, 4)), np.ones((3, 2))
    with pytest.raises(ValueError) as e:
        m.loss_and_grad(p, np.ones((3, 5)), t)
    assert "input 'x'" in str(e.value) and "(n, 4)" in str(e.value) and "(3, 5)" in str(e.value)
    with pytest.raises(ValueError, match=r"input 'x'.*\(n, 4\).*\(4,\)"):
        m.forward(p, np.ones(4))                                   # no batch dimension
    with pytest.raises(ValueError, match=r"target 't'.*\(n, 2\).*\(3, 3\)"):
        m.loss_and_grad(p, x, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"target 't': a batch of 2, but the others have 3"):
        m.loss_and_grad(p, x, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"input 'x'.*dtype"):
        m.forward(p, np.array([["a"] * 4] * 3))
    with pytest.raises(ValueError, match=r"input 'x'.*dtype"):
        m.forward(p, np.ones((3, 4), complex))
    with pytest.raises(ValueError, match=r"input 'x'.*dtype object"):
        m.forward(p, object())
    with pytest.raises(ValueError, match="missing input 'x'"):
        m.forward(p, {})
    with pytest.raises(ValueError, match=r"unknown input 'z'.*x"):
        m.forward(p, {"x": x, "z": x})
    with pytest.raises(ValueError, match="missing target 't'"):
        m.loss_and_grad(p, x)
    bad = dict(p)
    bad["W_i"] = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"param 'W_i'.*\(3, 4\).*\(4, 3\)"):
        m.loss_and_grad(bad, x, t)
    with pytest.raises(ValueError, match="missing param 'b_j'"):
        m.loss_and_grad({k: v for k, v in p.items() if k != "b_j"}, x, t)
    with pytest.raises(ValueError, match="unknown param 'q'"):
        m.loss_and_grad(dict(p, q=np.ones(1)), x, t)
    with pytest.raises(TypeError, match="params"):
        m.loss_and_grad([1, 2, 3], x, t)
    nl = nabla.compile_string("input x[2]\nparam w[2]\ny = w * x\noutput y\n")
    with pytest.raises(ValueError, match="no loss"):
        nl.loss_and_grad(nl.init_params(), np.ones((1, 2)))
    rosen = nabla.compile_string("param x\nloss L = (1 - x)^2\n")
    with pytest.raises(ValueError, match="no targets"):
        rosen.loss_and_grad(rosen.init_params(), None, np.ones((1, 1)))
    with pytest.raises(ValueError, match="no inputs"):
        rosen.forward(rosen.init_params(), np.ones((1, 1)))
    assert m.loss_and_grad(p, np.ones((0, 4)), np.ones((0, 2)))[0] == 0.0      # an empty batch


def test_class_index_out_of_range(samples):
    m = nabla.compile(samples / "digits.nn")
    with pytest.raises(ValueError, match=r"class index 10 in row 1 is outside 0..9"):
        m.loss_and_grad(m.init_params(), np.ones((2, 64)), np.array([3, 10]))


# -- reference counting -----------------------------------------------------------------------------

def test_lifetimes(samples):
    m = nabla.compile(samples / "hinton.nn", dtype="f64")
    x, t = nets.batch(4, 2, 6, seed=2)
    p = m.init_params()
    refs = (sys.getrefcount(x), sys.getrefcount(t), sys.getrefcount(p["W_i"]))
    for _ in range(20):
        loss, grads = m.loss_and_grad(p, x, t)
        m.forward(p, x)
    assert (sys.getrefcount(x), sys.getrefcount(t), sys.getrefcount(p["W_i"])) == refs   # nothing kept
    out = m.forward(p, x)["y_j"]
    w = p["W_i"]
    expected_out, expected_w = out.copy(), w.copy()
    del m, p, grads, x, t                              # arrays outliving the model and their dict
    gc.collect()
    for _ in range(3):
        junk = [np.random.rand(100) for _ in range(100)]
    del junk
    assert np.array_equal(out, expected_out) and np.array_equal(w, expected_w)
    assert w.base is not None                          # a view that keeps the flat buffer alive
    m2 = nabla.compile(samples / "hinton.nn", dtype="f64")
    p2 = m2.init_params()
    x2, t2 = nets.batch(4, 2, 6, seed=2)
    del p2["b_j"]                                      # the model outliving arrays it was given
    p2["b_j"] = np.zeros(2)
    l_a = m2.loss_and_grad(p2, x2, t2)[0]
    del x2, t2, p2
    gc.collect()
    assert np.isfinite(l_a) and m2.init_params()["W_i"].shape == (3, 4)


# -- threads and the GIL ------------------------------------------------------------------------------

def test_two_threads_one_model(samples):
    m = nabla.compile(samples / "digits.nn", dtype="f64")
    x, labels = digits_data(samples, 300)
    p = m.init_params()
    expected = m.loss_and_grad(p, x, labels)
    results, errors = [], []

    def work():
        try:
            for _ in range(10):
                results.append(m.loss_and_grad(p, x, labels))
        except Exception as e:   # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(results) == 20
    for loss, g in results:
        assert loss == expected[0] and all(np.array_equal(g[k], expected[1][k]) for k in g)


def test_gil_released(samples):
    m = nabla.compile(samples / "digits.nn", dtype="f64")
    x, labels = digits_data(samples)
    x = np.tile(x, (12, 1))
    labels = np.tile(labels, 12)
    p = m.init_params()
    start = time.perf_counter()
    m.loss_and_grad(p, x, labels)
    call = time.perf_counter() - start
    # While another thread is inside a call that long, this thread keeps running: the gaps between
    # its steps stay far below the call's length (they would be at least that long if the call
    # held the GIL).
    done = threading.Event()
    th = threading.Thread(target=lambda: (m.loss_and_grad(p, x, labels), done.set()))
    stamps = []
    th.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    th.join()
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([call])
    assert len(stamps) >= 3 and gaps.max() < max(call / 2, 0.01), (call, gaps.max(), len(stamps))


def test_forward_of_a_large_batch_runs_in_chunks():
    # 2^20 elements an example (about 24 MB of work space in f64): forward goes through 40 rows in
    # chunks of at most 256 MiB of work space, and gives what it gives one row at a time.
    src = ("input x[1024]\nparam w[1024]\nh = reshape(x * w, [1024, 1]) * reshape(x, [1, 1024])\n"
           "y = mean(tanh(h))\noutput y\n")
    m = nabla.compile_string(src, dtype="f64")
    p = m.init_params(seed=1)
    X = np.random.default_rng(0).standard_normal((40, 1024))
    whole = m.forward(p, {"x": X})["y"].ravel()
    rows = np.array([m.forward(p, {"x": X[i:i + 1]})["y"].ravel()[0] for i in range(40)])
    assert whole.shape == (40,)
    assert np.max(np.abs(whole - rows)) <= 1e-12 * np.max(np.abs(rows))
