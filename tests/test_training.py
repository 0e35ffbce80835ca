import numpy as np
import pytest

from gensar.training import Trainer, make_schedule


class LinearModel:
    """y = x @ w trained with SGD + momentum: has weights and optimizer state."""

    def __init__(self, interrupt_at=None):
        self.w = np.zeros(3)
        self.mom = np.zeros(3)
        self.steps = 0
        self.interrupt_at = interrupt_at

    def train_step(self, batch, lr):
        if self.interrupt_at is not None and self.steps == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        x, y = batch["input_ids"], batch["y"]
        err = x @ self.w - y
        self.mom = 0.9 * self.mom + x.T @ err / len(y)
        self.w -= lr * self.mom
        self.steps += 1
        return float((err ** 2).mean())

    def state_dict(self):
        return {"w": self.w.copy(), "mom": self.mom.copy(), "steps": np.array([self.steps])}

    def load_state_dict(self, d):
        self.w, self.mom, self.steps = d["w"].copy(), d["mom"].copy(), int(d["steps"][0])


def make_epoch(epoch):
    rng = np.random.default_rng([7, epoch])
    x = rng.standard_normal((64, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    return [{"input_ids": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 64, 8)]


def test_schedules():
    assert make_schedule(1.0, 100, "constant", warmup=0.1)(5) == pytest.approx(0.5)
    assert make_schedule(1.0, 100, "constant", warmup=0.1)(10) == pytest.approx(1.0)
    assert make_schedule(1.0, 100, "cosine", warmup=0.1)(10) == pytest.approx(1.0)
    assert make_schedule(1.0, 100, "cosine", warmup=0.1)(100) == pytest.approx(0.0)
    assert make_schedule(1.0, 100, "linear", warmup=0.1)(55) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        make_schedule(1.0, 10, "step")


def test_each_epoch_is_built_once():
    built = []
    ref = LinearModel()
    Trainer(ref, lambda e: (built.append(e), make_epoch(e))[1], epochs=3, lr=0.05, progress=False).fit()
    assert built == [0, 1, 2] and ref.steps == 24


def test_exact_resume_after_interruption(tmp_path):
    ref = LinearModel()
    Trainer(ref, make_epoch, epochs=3, lr=0.05, progress=False).fit()
    m = LinearModel(interrupt_at=13)  # inside epoch 2
    tr = Trainer(m, make_epoch, epochs=3, lr=0.05, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt, match="resumes"):
        tr.fit()
    m2 = LinearModel()
    hist = Trainer(m2, make_epoch, epochs=3, lr=0.05, checkpoint_dir=tmp_path, progress=False).fit()
    assert m2.steps == ref.steps == 24
    assert np.array_equal(m2.w, ref.w) and np.array_equal(m2.mom, ref.mom)
    assert list(hist["epoch"]) == [1, 2, 3]


def test_early_stopping_keeps_the_best(tmp_path):
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.2])
    m = LinearModel()
    seen = {}

    def validate():
        seen[len(seen) + 1] = m.w.copy()
        return {"ndcg": next(scores)}

    tr = Trainer(m, make_epoch, epochs=5, lr=0.05, validate=validate, metric="ndcg", patience=2,
                 checkpoint_dir=tmp_path, progress=False)
    hist = tr.fit()
    assert len(hist) == 4 and tr.state.best_epoch == 2
    assert np.array_equal(m.w, seen[2])  # the best epoch's weights are back


def test_trainer_bad_input():
    with pytest.raises(ValueError, match="epochs"):
        Trainer(LinearModel(), make_epoch, epochs=0)
    with pytest.raises(ValueError, match="metric"):
        Trainer(LinearModel(), make_epoch, epochs=1, validate=lambda: {})

    class Exploding(LinearModel):
        def train_step(self, batch, lr):
            return float("nan")

    with pytest.raises(FloatingPointError, match="learning rate"):
        Trainer(Exploding(), make_epoch, epochs=1, progress=False).fit()


def test_seq2seq_resume_equals_uninterrupted_run(tmp_path):
    """With the real C model: weights, AdamW moments, step count (and so dropout
    masks) and data order all come back, so the result is bit-identical."""
    from gensar import Seq2Seq

    cfg = dict(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
               num_heads=2, dropout_rate=0.1)

    def epoch_batches(epoch):
        rng = np.random.default_rng([3, epoch])
        out = []
        for _ in range(4):
            ids = rng.integers(3, 40, (6, 7)).astype(np.int32)
            out.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                        "labels": ids[:, ::-1][:, :4].copy()})
        return out

    class Interrupting(Seq2Seq):
        stop_at = 5

        def train_step(self, batch, lr=None):
            if self.step == self.stop_at:
                self.stop_at = -1
                raise KeyboardInterrupt
            return super().train_step(batch, lr)

    ref = Seq2Seq(cfg, seed=1)
    Trainer(ref, epoch_batches, epochs=3, lr=3e-3, progress=False).fit()
    m = Interrupting(cfg, seed=1)
    with pytest.raises(KeyboardInterrupt):
        Trainer(m, epoch_batches, epochs=3, lr=3e-3, checkpoint_dir=tmp_path, progress=False).fit()
    resumed = Seq2Seq(cfg, seed=1)
    Trainer(resumed, epoch_batches, epochs=3, lr=3e-3, checkpoint_dir=tmp_path, progress=False).fit()
    assert resumed.step == ref.step == 12
    assert np.array_equal(resumed.params, ref.params)
    assert np.array_equal(resumed.adam_v, ref.adam_v)
