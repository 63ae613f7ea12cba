#!/usr/bin/env bash
# Interoperability with PyTorch: params that `nabla train --save` writes load into torch.nn.RNN,
# nn.GRU and nn.LSTM by name (the five-line snippet of docs/language.md), and the loaded module
# computes the same states as `nabla predict` on the same sequences (to 1e-5: predict runs in f32).
# Needs /usr/bin/python3 with torch (Debian: apt-get install python3-torch); without it the test
# is skipped (exit 77).
#
# usage: bash tests/recurrence/torch_interop.sh PATH/TO/nabla
set -u
if [ $# -ne 1 ]; then
  echo "usage: $0 PATH/TO/nabla" >&2
  exit 2
fi
NABLA=$1
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "torch_interop: skipped: $PY cannot import torch (apt-get install python3-torch)"
  exit 77
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-torch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

T=7 D=3 H=5
# 24 sequences of T steps of D features, and a class target each.
"$PY" - "$TMP/data.csv" "$T" "$D" <<'PYEOF'
import random, sys
path, T, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(5)
with open(path, "w") as f:
    for _ in range(24):
        xs = [round(rng.uniform(-2, 2), 6) for _ in range(T * D)]
        f.write(",".join(map(str, xs)) + f",{rng.randrange(4)}\n")
PYEOF

failed=0
for form in "rnn(xs, $H)" "rnn(xs, $H, relu)" "gru(xs, $H)" "lstm(xs, $H)"; do
  cat >"$TMP/p.nn" <<NNEOF
input  xs[$T, $D]
target t[4]
hs = $form
y  = dense(hs[-1], 4, log_softmax)
output hs
loss E = -sum(t * y)
NNEOF
  if ! "$NABLA" train "$TMP/p.nn" --data "$TMP/data.csv" --epochs 3 --batch 8 --lr 0.1 \
       --save "$TMP/params.json" >"$TMP/train.out" 2>&1; then
    echo "FAIL $form: nabla train"; sed 's/^/  /' "$TMP/train.out"; failed=1; continue
  fi
  if ! "$NABLA" predict "$TMP/p.nn" --params "$TMP/params.json" --data "$TMP/data.csv" \
       >"$TMP/states.csv" 2>"$TMP/predict.err"; then
    echo "FAIL $form: nabla predict"; sed 's/^/  /' "$TMP/predict.err"; failed=1; continue
  fi
  if "$PY" - "$form" "$TMP" "$T" "$D" "$H" <<'PYEOF'
import csv, json, sys
import torch
form, tmp, T, D, H = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# --- the snippet of docs/language.md (nn.GRU here; nn.RNN and nn.LSTM load the same way) ---
p = json.load(open(tmp + "/params.json"))
if form.startswith("gru"):    net = torch.nn.GRU(D, H, batch_first=True)
elif form.startswith("lstm"): net = torch.nn.LSTM(D, H, batch_first=True)
else: net = torch.nn.RNN(D, H, batch_first=True, nonlinearity="relu" if "relu" in form else "tanh")
torch_name = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}
net.load_state_dict({torch_name[k]: torch.tensor(p["hs." + k]) for k in torch_name})
# ---
rows = [list(map(float, r)) for r in csv.reader(open(tmp + "/data.csv"))]
xs = torch.tensor([r[:T * D] for r in rows], dtype=torch.float32).reshape(-1, T, D)
with torch.no_grad():
    states = net.float()(xs)[0].reshape(len(rows), T * H)
got = torch.tensor([list(map(float, r)) for r in csv.reader(open(tmp + "/states.csv"))])
err = (got - states).abs().max().item()
scale = states.abs().max().item()
print(f"{form}: max |nabla - torch| = {err:.3g} (values up to {scale:.3g})")
sys.exit(0 if got.shape == states.shape and err <= 1e-5 * max(scale, 1) else 1)
PYEOF
  then echo "ok   $form"; else echo "FAIL $form: nabla's states differ from torch's"; failed=1; fi
done
exit $failed
