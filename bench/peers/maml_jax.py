"""JAX peer of bench-cuda's exact MAML meta-gradient steps (float32, one GPU,
matmul precision "highest" so TF32 is off): jax.jit of jax.grad through the
unrolled inner loop, vmapped over tasks. Printed as JSON lines like
bench-cuda's; median of repeated steps, each blocked until ready."""
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from configs import CONFIGS, conv4_features

jax.config.update("jax_default_matmul_precision", "highest")


def mlp(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]


def conv4(p, x):  # x [n, C, H, W]
    h = x
    for b in range(4):
        h = jax.lax.conv_general_dilated(h, p[f"c{b}"], (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = h + p[f"cb{b}"][None, :, None, None]
        mean = h.mean(axis=(0, 2, 3), keepdims=True)
        var = ((h - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        h = (h - mean) / jnp.sqrt(var + 1e-3) * p[f"g{b}"][None, :, None, None] + p[f"be{b}"][None, :, None, None]
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return h.reshape(h.shape[0], -1) @ p["hw"] + p["hb"]


def mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def make_problem(c, key):
    keys = iter(jax.random.split(key, 64))
    rand = lambda *shape: jax.random.normal(next(keys), shape) * 0.1
    t, s, q = c["tasks"], c["support"], c["query"]
    if c["model"] == "mlp":
        params = {"w1": rand(1, 40), "b1": rand(40), "w2": rand(40, 40), "b2": rand(40), "w3": rand(40, 1),
                  "b3": rand(1)}
        return mlp, mse, params, (rand(t, s, 1) * 50, rand(t, s, 1) * 10, rand(t, q, 1) * 50, rand(t, q, 1) * 10)
    ch, cin, size, ways = c["channels"], c["in_channels"], c["size"], c["ways"]
    params = {}
    for b in range(4):
        params[f"c{b}"] = rand(ch, cin if b == 0 else ch, 3, 3)
        params[f"cb{b}"] = rand(ch)
        params[f"g{b}"] = 1 + rand(ch)
        params[f"be{b}"] = rand(ch)
    params["hw"] = rand(conv4_features(size, ch), ways)
    params["hb"] = rand(ways)
    labels = lambda n: jnp.tile(jnp.arange(n) % ways, (t, 1))
    images = lambda n: jax.random.uniform(next(keys), (t, n, cin, size, size))
    return conv4, cross_entropy, params, (images(s), labels(s), images(q), labels(q))


def make_step(model, loss_fn, alpha, steps):
    def task_loss(p, sx, sy, qx, qy):
        fast = p
        for _ in range(steps):
            g = jax.grad(lambda w: loss_fn(model(w, sx), sy))(fast)
            fast = jax.tree_util.tree_map(lambda w, d: w - alpha * d, fast, g)
        return loss_fn(model(fast, qx), qy)

    def meta_loss(p, sx, sy, qx, qy):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy))

    return jax.jit(jax.grad(meta_loss))


def median_ms(step, repeats):
    for _ in range(3):
        jax.block_until_ready(step())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    key = jax.random.PRNGKey(1)
    for c in CONFIGS:
        model, loss_fn, params, batch = make_problem(c, key)
        step = make_step(model, loss_fn, c["alpha"], c["steps"])
        record = {"group": "maml", "config": c["name"], "impl": "jax jit"}
        try:
            record["ms"] = median_ms(lambda: step(params, *batch), repeats if c["model"] == "mlp" else max(5, repeats // 5))
        except Exception as error:
            record["error"] = f"{type(error).__name__}: {error}"[:300]
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
