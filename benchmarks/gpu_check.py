"""GPU check: exactness on CUDA, then the cost curve and a short speed sweep. Under 8 minutes.

Run by ``benchmarks/gpu_check.sh`` on a lent GPU machine; writes ``$OUT/gpu_check.json`` and
prints a summary. Models are random-weight (the registry models are too big to carry to the
device): exactness holds for any weights, and the cost of a pass does not depend on their
values, so both checks are meaningful; acceptance rates and speedups on random weights are not,
and the sweep reports only the cost side (seconds per pass of T tokens) and the drafting
overhead, never a speedup.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from retrodraft import RetroDraft
from retrodraft.cost import CostModel

DEVICE = "cuda"


def random_model(arch: str, dtype: torch.dtype, **over) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=0.3)
    kw.update(over)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **kw), attn_implementation="sdpa", dtype=dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.to(DEVICE).eval()


def exactness() -> list[dict]:
    """Greedy float32 outputs with every drafter and budget must equal plain generate's."""
    rows = []
    for arch in ("llama", "qwen2"):
        model = random_model(arch, torch.float32)
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            prompt = torch.randint(1, 512, (1, 24), generator=g)
            prompt = torch.cat([prompt, prompt[:, :12]], dim=1).to(DEVICE)  # something to look up
            ref = model.generate(prompt, max_new_tokens=48, do_sample=False)
            for drafters in (["recycling"], ["lookup"], ["stand"], ["aded"], ["recycling", "lookup"]):
                for budget in (4, 16, 64, "auto"):
                    a = RetroDraft(drafters=drafters, budget=budget)
                    out = model.generate(prompt, max_new_tokens=48, do_sample=False, assistant=a)
                    rows.append({"arch": arch, "seed": seed, "drafters": "+".join(drafters), "budget": budget,
                                 "identical": bool(torch.equal(out, ref)), "mean_accepted": a.stats.mean_accepted})
    return rows


def cost_sweep() -> list[dict]:
    """Seconds per pass of T tokens for Qwen2.5-1.5B- and 0.5B-shaped models (random weights)."""
    shapes = {
        "qwen2.5-1.5b-shape": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
        "qwen2.5-0.5b-shape": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    }
    out = []
    for name, over in shapes.items():
        for dtype in (torch.bfloat16, torch.float16):
            model = random_model("qwen2", dtype, **over)
            cm = CostModel.measure(model, sizes=(1, 2, 4, 8, 16, 32, 64, 96, 128), past_len=512, repeats=5)
            out.append({"model": name, "dtype": str(dtype), "device": cm.device,
                        "sizes": cm.sizes.astype(int).tolist(), "ms": (cm.seconds * 1000).round(3).tolist(),
                        "relative": cm.relative(cm.sizes).round(3).tolist()})
            # Overhead: drafting + acceptance + compaction per step next to the pass itself.
            prompt = torch.randint(1, 151936, (1, 256)).to(DEVICE)
            for budget in (16, 64):
                a = RetroDraft(drafters=["recycling", "lookup"], budget=budget)
                model.generate(prompt, max_new_tokens=8, do_sample=False, assistant=a)  # warm-up
                model.generate(prompt, max_new_tokens=64, do_sample=False, assistant=a)
                s = a.stats
                out[-1][f"overhead_budget{budget}"] = {
                    "steps": s.steps, "verify_ms_per_step": 1000 * s.verify_s / s.steps,
                    "draft_ms_per_step": 1000 * s.draft_s / s.steps,
                    "bookkeeping_ms_per_step": 1000 * s.bookkeeping_s / s.steps}
            del model
            torch.cuda.empty_cache()
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", file=sys.stderr)
        return 2
    t0 = time.time()
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["exactness"] = rows = exactness()
    bad = [r for r in rows if not r["identical"]]
    print(f"exactness: {len(rows) - len(bad)}/{len(rows)} identical to plain greedy ({time.time() - t0:.0f} s)")
    for r in bad:
        print("  DIFFERS:", r)
    report["cost"] = cost_sweep()
    for c in report["cost"]:
        print(c["model"], c["dtype"], "relative cost by T:", dict(zip(c["sizes"], c["relative"])))
    report["seconds"] = time.time() - t0
    out = Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"written {out} in {report['seconds']:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
