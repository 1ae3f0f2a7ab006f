"""The MAML step configurations of the GPU figures, shared by the PyTorch and
JAX peers; they mirror bench/maml_setups.hpp (bench-cuda's side)."""

CONFIGS = [
    # name, model, tasks, support per task, query per task, inner steps, alpha
    dict(name="sinusoid mlp, 25 tasks, K=10, 1 step", model="mlp", tasks=25, support=10, query=10, steps=1,
         alpha=0.01),
    dict(name="sinusoid mlp, 25 tasks, K=10, 5 steps", model="mlp", tasks=25, support=10, query=10, steps=5,
         alpha=0.01),
    dict(name="conv4 28x28 64ch, 5-way 1-shot, 15 queries, 32 tasks, 1 step", model="conv4", tasks=32, ways=5,
         support=5, query=75, steps=1, alpha=0.4, size=28, in_channels=1, channels=64),
    dict(name="conv4 84x84x3 32ch, 5-way 1-shot, 15 queries, 4 tasks, 5 steps", model="conv4", tasks=4, ways=5,
         support=5, query=75, steps=5, alpha=0.01, size=84, in_channels=3, channels=32),
]


def conv4_features(size, channels):
    """Inputs of the linear head after four [conv, bn, relu, 2x2 max-pool] blocks."""
    for _ in range(4):
        size //= 2
    return channels * size * size
