"""Turns the JSON lines of bench-cuda and the peers into Markdown tables:
one per group, one row per implementation and configuration, with the
speed-up of metatape over each peer (of eager metatape, and of its CUDA-graph
replay where it was measured).
  python3 bench/peers/report.py file.jsonl ..."""
import json
import sys
from collections import defaultdict


def main():
    rows = defaultdict(list)
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    record = json.loads(line)
                    rows[(record["group"], record["config"])].append(record)
    for group in ("gemm", "maml"):
        print(f"\n### {group}\n")
        print("| configuration | implementation | ms | metatape's speed-up |" + (" GFLOP/s |" if group == "gemm" else ""))
        print("| --- | --- | --- | --- |" + (" --- |" if group == "gemm" else ""))
        for (g, config), records in rows.items():
            if g != group:
                continue
            ours = {r["impl"]: r["ms"] for r in records if r["impl"].startswith("metatape") and "ms" in r}
            for r in records:
                if "ms" not in r:
                    print(f"| {config} | {r['impl']} | failed: {r.get('error', '?')} | |")
                    continue
                speedup = ""
                if not r["impl"].startswith("metatape"):
                    speedup = ", ".join(f"{r['ms'] / ms:.2f}x ({impl})" for impl, ms in ours.items())
                extra = f" {r['gflops']:.0f} |" if "gflops" in r else (" |" if group == "gemm" else "")
                print(f"| {config} | {r['impl']} | {r['ms']:.3f} | {speedup} |{extra}")


if __name__ == "__main__":
    main()
