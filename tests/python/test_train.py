# nabla.train (the CLI's trainer: the same params bit for bit for the same options), progress
# output, and params files.
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import nabla

BUILD = pathlib.Path(nabla.__file__).resolve().parents[2]   # <build>/python/nabla/__init__.py


def digits(samples, rows=None):
    d = np.loadtxt(samples / "data" / "digits.csv", delimiter=",", skiprows=1, max_rows=rows)
    return d[:, :64], d[:, 64].astype(np.int64)


def test_train_digits(samples, capsys):
    m = nabla.compile(samples / "digits.nn")
    x, labels = digits(samples, 600)
    params, history, summary = nabla.train(m, x, labels, epochs=4, batch=32, optimizer="adam", lr=0.01,
                                           valid_fraction=0.2, verbose=False)
    assert capsys.readouterr().err == ""
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.7
    assert history[-1]["valid_accuracy"] > 0.8 and summary["valid_rows"] == 120 and summary["train_rows"] == 480
    assert history[0]["test_loss"] is None
    assert list(params) == list(m.params) and params["h.W"].shape == (32, 64) and params["h.W"].dtype == np.float32
    # trained params are an ordinary params dict: the loss there is what the summary says
    loss, _ = m.loss_and_grad(params, x, labels)
    assert np.isfinite(loss)


def test_train_progress_and_callback(samples, capsys):
    m = nabla.compile(samples / "hinton.nn")
    x = np.random.default_rng(0).random((40, 4))
    t = (x[:, :2] > 0.5).astype(np.float64)
    seen = []
    nabla.train(m, x, t, epochs=3, batch=8, on_epoch=seen.append)
    err = capsys.readouterr().err
    assert err.startswith("training on 40 examples: sgd, lr 0.1, batch 8, 3 epochs, seed 0, 1 thread, jit f32\n")
    assert "epoch 1/3" in err.replace("  ", " ") and "loss" in err
    assert [s["epoch"] for s in seen] == [1, 2, 3]

    def stop(stats):
        raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        nabla.train(m, x, t, epochs=3, on_epoch=stop, verbose=False)


def test_train_lr_schedule(samples, capsys):
    # cosine over 4 epochs of one full batch each: the rates lr (1 + cos(pi t / 4)) / 2, t = 0..3,
    # the last of each epoch in its stats; the CLI's header and epoch lines name it
    m = nabla.compile(samples / "hinton.nn", dtype="f64")
    x = np.random.default_rng(1).random((16, 4))
    t = (x[:, :2] > 0.5).astype(np.float64)
    p, history, _ = nabla.train(m, x, t, epochs=4, batch=16, lr=0.5, lr_schedule="cosine")
    err = capsys.readouterr().err
    assert ", lr 0.5 (cosine decay), batch 16," in err and "  lr 0.427  " in err
    want = [0.5 * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)]
    assert [h["lr"] for h in history] == pytest.approx(want, rel=1e-15)
    q, hc, _ = nabla.train(m, x, t, epochs=4, batch=16, lr=0.5, verbose=False)
    assert [h["lr"] for h in hc] == [0.5] * 4
    assert not np.array_equal(p["W_i"], q["W_i"])


def test_train_bad_options(samples):
    m = nabla.compile(samples / "hinton.nn")
    x, t = np.ones((4, 4)), np.ones((4, 2))
    with pytest.raises(ValueError, match="optimizer"):
        nabla.train(m, x, t, optimizer="rmsprop", verbose=False)
    with pytest.raises(ValueError, match="lr"):
        nabla.train(m, x, t, lr=-1, verbose=False)
    with pytest.raises(ValueError, match="lr_schedule"):
        nabla.train(m, x, t, lr_schedule="cos", verbose=False)
    with pytest.raises(ValueError, match="epochs"):
        nabla.train(m, x, t, epochs=0, verbose=False)
    with pytest.raises(ValueError, match="batch"):
        nabla.train(m, x, t, batch=0, verbose=False)
    with pytest.raises(ValueError, match=r"input 'x'"):
        nabla.train(m, np.ones((4, 3)), t, verbose=False)
    nl = nabla.compile_string("input x[2]\nparam w[2]\ny = w * x\noutput y\n")
    with pytest.raises(ValueError, match="no loss"):
        nabla.train(nl, np.ones((2, 2)), verbose=False)


def test_train_nan_stops(samples):
    m = nabla.compile_string("param x ~ normal(0, 1)\nloss L = exp(1000 * (x * x + 1))\n", dtype="f64")
    with pytest.raises(RuntimeError, match="training stopped"):
        nabla.train(m, epochs=2, verbose=False)


def test_same_params_as_the_cli(samples, tmp_path):
    exe = BUILD / "nabla"
    if not exe.exists():
        pytest.skip("the nabla tool is not built")
    m = nabla.compile(samples / "digits.nn")
    out = tmp_path / "cli.json"
    subprocess.run([str(exe), "train", str(samples / "digits.nn"), "--data", str(samples / "data" / "digits.csv"),
                    "--epochs", "2", "--batch", "16", "--optimizer", "momentum", "--seed", "5", "--threads", "2",
                    "--valid", "0.1", "--save", str(out)], check=True, capture_output=True)
    x, labels = digits(samples)
    params, _, _ = nabla.train(m, x, labels, epochs=2, batch=16, optimizer="momentum", seed=5, threads=2,
                               valid_fraction=0.1, verbose=False)
    cli = nabla.load_params(m, out)
    for k in params:
        assert np.array_equal(params[k], cli[k]), k


def test_params_files(samples, tmp_path):
    m = nabla.compile(samples / "hinton.nn", dtype="f64")
    p = m.init_params(4)
    path = tmp_path / "p.json"
    nabla.save_params(m, p, path)
    assert set(json.loads(path.read_text())) == set(m.params)
    q = nabla.load_params(m, path)
    assert all(np.array_equal(p[k], q[k]) and q[k].dtype == np.float64 for k in p)
    m.save_params(q, str(path))
    assert m._loss_and_grad_stats(q, np.ones((1, 4)), np.ones((1, 2)))[2][0] is False
    path.write_text('{"W_i": [[1, 2]], "b_i": [1, 2, 3], "W_j": [[0, 0, 0], [0, 0, 0]], "b_j": [0, 0]}')
    with pytest.raises(ValueError, match='param "W_i"'):
        nabla.load_params(m, path)
    with pytest.raises(ValueError, match="cannot open"):
        nabla.load_params(m, tmp_path / "missing.json")
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_stops_on_exception_and_ctrl_c_with_threads(samples):
    import signal
    import threading
    m = nabla.compile(samples / "digits.nn")
    x, labels = digits(samples)

    def stop(stats):
        raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        nabla.train(m, x, labels, epochs=3, threads=2, on_epoch=stop, verbose=False)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            nabla.train(m, x, labels, epochs=100000, batch=8, threads=2, verbose=False)
    finally:
        timer.cancel()
    # the model is still usable
    assert np.isfinite(m.loss_and_grad(m.init_params(), x[:5], labels[:5])[0])
