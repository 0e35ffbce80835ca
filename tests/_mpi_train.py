"""Run by tests/test_mpi.py, alone or under mpirun: trains a tiny Seq2Seq with the
Trainer on fixed batches and (rank 0) saves the loss curve and final parameters.

    python tests/_mpi_train.py OUT.npz [--checkpoints DIR] [--die-at STEP] [--evaluate]

--die-at STEP: the process exits abruptly (os._exit) before optimiser step STEP,
as a kill would; checkpoints are written after every step.
--evaluate: also fits a tiny GenSAR on toy data (identifiers given) and saves its
sharded evaluation next to an unsharded one made by every rank alone.
"""
import argparse
import os
import sys

import numpy as np

from gensar.distributed import world
from gensar.seq2seq import Seq2Seq
from gensar.training import Trainer


class Dying(Seq2Seq):
    die_at = -1

    def _maybe_die(self):
        if self.step + 1 == self.die_at:
            os._exit(17)

    def train_step(self, batch, lr=None):
        self._maybe_die()
        return super().train_step(batch, lr)

    def apply_grads(self, lr=None):
        self._maybe_die()
        return super().apply_grads(lr)


def batches(epoch):
    """7 rows per global batch (odd: the shards differ in size) and labels of varied
    length (-100 padding: the shards differ in token counts)."""
    rng = np.random.default_rng([5, epoch])
    out = []
    for _ in range(4):
        ids = rng.integers(2, 60, size=(7, 11))
        mask = np.ones_like(ids)
        mask[:, 8:] = rng.integers(0, 2, size=(7, 1))
        lab = rng.integers(2, 60, size=(7, 6))
        lengths = rng.integers(1, 7, size=7)
        lab[np.arange(6)[None, :] >= lengths[:, None]] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "labels": lab})
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--checkpoints", default=None)
    p.add_argument("--die-at", type=int, default=-1)
    p.add_argument("--evaluate", action="store_true")
    a = p.parse_args()
    w = world()
    model = Dying(dict(vocab_size=60, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                       dropout_rate=0.0), seed=3, weight_decay=0.01, max_grad_norm=1.0)
    model.die_at = a.die_at
    tr = Trainer(model, batches, epochs=3, lr=3e-3, schedule="cosine", warmup=0.1,
                 checkpoint_dir=a.checkpoints, progress=False, checkpoint_every_s=0.0)
    tr.fit()
    res = {"losses": np.array(tr.state.step_losses), "params": model.params.copy(),
           "size": np.array(w.size)}
    if a.evaluate:
        import gensar
        from gensar import datasets

        ds = datasets.toy(n_users=40, n_items=130, seed=1)
        i = np.random.default_rng(0).permutation(ds.n_items)  # unique IDs: (i % 16, i // 16) is unique
        sem = np.stack([i % 16, i // 16, i % 9, i % 5], 1)
        col = np.stack([i % 16, i // 16, (i * 7) % 11, i % 3], 1)
        g = gensar.GenSAR(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                          shared_levels=(16, 16), specific_levels=(16, 16), n_rec=3, n_search=2, epochs=1,
                          examples_per_epoch=60, batch_size=16, vocab_size=300, valid_cases=0, num_beams=5,
                          dropout_rate=0.0)
        g.fit(ds, ids=(sem, col), progress=False)
        table = g.evaluate("test", protocols=("sampled",), progress=False)
        ex = g.builder_.examples("nrip", "test")
        from gensar.tasks import render

        cand = np.asarray(ds.candidates("rec", "test"))[:len(ex)]
        alone, _ = g._decode("rec", render(ex), 20, candidates=cand)  # every rank alone, no sharding
        res["eval_sharded"] = g.eval_ranks_[("rec", "sampled")]
        from gensar.metrics import target_ranks

        res["eval_alone"] = target_ranks(alone, ex["item"].to_numpy())
        res["eval_ndcg"] = table["NDCG@10"].to_numpy()
        res["gensar_params"] = g.seq2seq_.params.copy()
    if w.is_root:
        np.savez(a.out, **res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
