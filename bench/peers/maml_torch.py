"""PyTorch peers of bench-cuda's exact MAML meta-gradient steps (float32,
one GPU, TF32 off), printed as JSON lines like bench-cuda's:
  eager     a loop over tasks, inner gradients by torch.autograd.grad(...,
            create_graph=True): how MAML is usually written
  torch.func  vmap over tasks of a functional inner loop (torch.func.grad),
            the outer gradient by torch.func.grad
Median of repeated steps, each synchronised."""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from configs import CONFIGS, conv4_features

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DEVICE = "cuda"


def mlp(p, x):
    h = F.relu(x @ p["w1"] + p["b1"])
    h = F.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]


def conv4(p, x):  # x [n, C, H, W]
    h = x
    for b in range(4):
        h = F.conv2d(h, p[f"c{b}"], p[f"cb{b}"], padding=1)
        h = F.batch_norm(h, None, None, p[f"g{b}"], p[f"be{b}"], training=True, eps=1e-3)
        h = F.max_pool2d(F.relu(h), 2)
    return h.flatten(1) @ p["hw"] + p["hb"]


def make_problem(c, gen):
    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE) * 0.1
    if c["model"] == "mlp":
        params = {"w1": rand(1, 40), "b1": rand(40), "w2": rand(40, 40), "b2": rand(40), "w3": rand(40, 1),
                  "b3": rand(1)}
        t, s, q = c["tasks"], c["support"], c["query"]
        batch = (rand(t, s, 1) * 50, rand(t, s, 1) * 10, rand(t, q, 1) * 50, rand(t, q, 1) * 10)
        return mlp, F.mse_loss, params, batch
    ch, cin, size, ways = c["channels"], c["in_channels"], c["size"], c["ways"]
    params = {}
    for b in range(4):
        params[f"c{b}"] = rand(ch, cin if b == 0 else ch, 3, 3)
        params[f"cb{b}"] = rand(ch)
        params[f"g{b}"] = 1 + rand(ch)
        params[f"be{b}"] = rand(ch)
    params["hw"] = rand(conv4_features(size, ch), ways)
    params["hb"] = rand(ways)
    t, s, q = c["tasks"], c["support"], c["query"]
    labels = lambda n: torch.arange(n, device=DEVICE).remainder(ways).expand(t, n).contiguous()
    batch = (torch.rand(t, s, cin, size, size, generator=gen, device=DEVICE), labels(s),
             torch.rand(t, q, cin, size, size, generator=gen, device=DEVICE), labels(q))
    return conv4, F.cross_entropy, params, batch


def eager_step(model, loss_fn, params, batch, alpha, steps):
    leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
    sx, sy, qx, qy = batch
    meta = 0.0
    for t in range(sx.shape[0]):
        fast = dict(leaves)
        for _ in range(steps):
            loss = loss_fn(model(fast, sx[t]), sy[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - alpha * g for (n, p), g in zip(fast.items(), grads)}
        meta = meta + loss_fn(model(fast, qx[t]), qy[t]) / sx.shape[0]
    return torch.autograd.grad(meta, list(leaves.values()))


def make_func_step(model, loss_fn, alpha, steps):
    def task_loss(p, sx, sy, qx, qy):
        fast = p
        for _ in range(steps):
            g = grad(lambda q: loss_fn(model(q, sx), sy))(fast)
            fast = {n: fast[n] - alpha * g[n] for n in fast}
        return loss_fn(model(fast, qx), qy)

    def meta_loss(p, sx, sy, qx, qy):
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()

    meta_grad = grad(meta_loss)
    return lambda params, batch: meta_grad(params, *batch)


def median_ms(step, repeats):
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    gen = torch.Generator(device=DEVICE)
    gen.manual_seed(1)
    for c in CONFIGS:
        model, loss_fn, params, batch = make_problem(c, gen)
        n = repeats if c["model"] == "mlp" else max(5, repeats // 5)
        runs = [("pytorch eager", lambda: eager_step(model, loss_fn, params, batch, c["alpha"], c["steps"]))]
        func_step = make_func_step(model, loss_fn, c["alpha"], c["steps"])
        runs.append(("pytorch torch.func vmap", lambda: func_step(params, batch)))
        for impl, step in runs:
            record = {"group": "maml", "config": c["name"], "impl": impl}
            try:
                record["ms"] = median_ms(step, n)
            except Exception as error:  # report, do not hide: e.g. an op vmap does not support
                record["error"] = f"{type(error).__name__}: {error}"[:300]
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
