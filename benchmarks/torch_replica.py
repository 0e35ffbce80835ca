"""Is GenSAR's training in C what holds it back? The same fit with PyTorch doing each step.

Runs GenSAR.fit on ml-100k (quick preset plus overrides) with every training step
done by PyTorch and HuggingFace's T5ForConditionalGeneration instead of the C
core: the same batches (gensar's task mixture, tokenizer, length grouping and
constrained-loss masks), the same initial weights (exported with to_hf_t5), the
same learning-rate schedule (gensar's Trainer passes it per step), AdamW with
gensar's betas, eps and weight decay on the same tensors, and gradient clipping at
the same norm. After training the weights are copied back into a C model
(Seq2Seq.from_hf_t5) and evaluated with gensar's own validation code, so only the
training engine differs from a plain fit. Dropout masks differ (torch draws its own).

    python benchmarks/torch_replica.py [--seed 0] [key=json ...]

Prints and writes benchmarks/results/torch-replica-ml-100k-s<seed>.md: validation
sampled NDCG@10 of both tasks. Compare with a plain fit of the same settings
(benchmarks/paired_study.py's cells, or fit + evaluate yourself).
Needs torch and transformers (optional dependencies); 1 thread; about 25 minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit  # noqa: E402


class TorchSteps:
    """Stands in for Seq2Seq.train_step: the first call builds the HF model from the C
    model's weights; every call is one AdamW step in PyTorch."""

    def __init__(self, torch, transformers, workdir):
        self.torch, self.transformers, self.workdir = torch, transformers, workdir
        self.hf = self.opt = None

    def __call__(self, model, batch, lr=None):
        torch = self.torch
        if self.hf is None:
            self.hf = self.transformers.T5ForConditionalGeneration.from_pretrained(model.to_hf_t5(self.workdir))
            self.hf.train()
            decay = {name for name, (_, _, d) in model._tensors.items() if d}
            params = dict(self.hf.named_parameters())
            unknown = set(params) - set(model._tensors)
            if unknown:
                raise SystemExit(f"HF tensors gensar does not have: {sorted(unknown)}")
            groups = [{"params": [p for n, p in params.items() if n in decay], "weight_decay": model.weight_decay},
                      {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0}]
            self.opt = torch.optim.AdamW(groups, lr=lr, betas=model.betas, eps=model.eps)
        for g in self.opt.param_groups:
            g["lr"] = lr
        labels = torch.as_tensor(batch["labels"].astype(np.int64))
        logits = self.hf(input_ids=torch.as_tensor(batch["input_ids"].astype(np.int64)),
                         attention_mask=torch.as_tensor(batch["attention_mask"].astype(np.int64)),
                         labels=labels).logits
        if "allowed" in batch:  # the constrained softmax: codes not valid after the prefix out
            logits = logits.masked_fill(~torch.as_tensor(batch["allowed"]), -1e30)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.hf.parameters(), model.max_grad_norm)
        self.opt.step()
        return loss.item()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="GenSAR settings as key=json, e.g. constrained_softmax=false")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args()
    try:
        import torch
        import transformers
    except ImportError:
        raise SystemExit("this check needs torch and transformers: pip install torch transformers") from None
    import gensar
    from gensar import datasets
    from gensar.cli import PRESETS
    from gensar.seq2seq import Seq2Seq

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)  # torch's dropout masks
    gensar.set_num_threads(1)
    # HF T5 takes one token per encoder position: identifiers as tokens, not item bags
    cfg = dict(PRESETS["quick"], seed=a.seed, item_bags=False)
    for kv in a.overrides:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    rev = commit()
    ds = datasets.load("ml-100k", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        steps = TorchSteps(torch, transformers, tmp)
        real = Seq2Seq.train_step
        Seq2Seq.train_step = lambda self, batch, lr=None: steps(self, batch, lr)
        try:
            t = time.perf_counter()
            model = gensar.GenSAR(**cfg).fit(ds, progress=False)
            fit_s = time.perf_counter() - t
        finally:
            Seq2Seq.train_step = real
    trained = {k: v.detach().numpy() for k, v in steps.hf.state_dict().items()}
    model.seq2seq_ = Seq2Seq.from_hf_t5(trained, steps.hf.config.to_dict())
    table = model.evaluate("valid", protocols=("sampled",), tasks=model._eval_tasks(), progress=False)
    res = {r.task: float(r["NDCG@10"]) for _, r in table.iterrows()}
    overrides = " ".join(a.overrides)
    command = f"python benchmarks/torch_replica.py --seed {a.seed} {overrides}".rstrip()
    text = (f"# GenSAR trained by PyTorch + HF T5 instead of the C core (ml-100k, seed {a.seed})\n\n"
            f"Command: `{command}` at commit {rev}; {gensar.cpu_info()['cpu']}; 1 thread; fit {fit_s:.0f} s (shared machine).\n"
            f"Quick preset{' + ' + overrides if overrides else ''}; validation, sampled protocol, all cases.\n\n"
            "| task | NDCG@10 |\n|---|---|\n" + "".join(f"| {t} | {v:.4f} |\n" for t, v in res.items()))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"torch-replica-ml-100k-s{a.seed}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
