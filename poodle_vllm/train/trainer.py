"""Fine-tune a base encoder into a surrogate classifier: a plain torch loop with a few verbs.

``SurrogateTrainer(args).train(base, texts, labels, label_names)`` splits the items (stratified),
fine-tunes ``AutoModelForSequenceClassification`` with AdamW and a linear warm-up/decay schedule,
weights the loss by inverse class frequency, evaluates validation agreement every epoch (or every
``eval_every_steps``), keeps the best weights, stops early or at the time budget, and calibrates
a softmax temperature on the validation split. ``save`` writes an artifact folder atomically.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poodle_vllm.surrogate.runtime import batched_logits, collate, encode_texts
from poodle_vllm.train.args import TrainingArguments
from poodle_vllm.train.artifact import SurrogateMetadata, write_artifact
from poodle_vllm.train.calibration import CalibrationResult, fit_temperature, nll, softmax
from poodle_vllm.train.data import stratified_split
from poodle_vllm.train.heads import build_classifier, load_tokenizer, save_classifier, uses_mean_pooling

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class EvalResult:
    """Quality on a labelled set. Against LLM labels ``accuracy`` is the agreement with the LLM."""

    accuracy: float
    items: int
    nll: float
    macro_f1: float
    majority_share: float
    """Share of the most frequent label: the accuracy of always answering it."""
    per_label_recall: dict[str, float] = field(default_factory=dict)
    truncated: int = 0

    @property
    def agreement(self) -> float:
        return self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a training run produced (the model itself stays on the trainer)."""

    base_model: str
    label_names: list[str]
    train_items: int
    val_items: int
    best_val_agreement: float
    val_majority_share: float
    epochs_run: float
    steps: int
    train_time_s: float
    stopped_reason: str
    """``epochs`` (ran all), ``early_stopping`` or ``time_budget``."""
    truncated_share: float
    """Share of the training + validation texts longer than max_length."""
    history: list[dict[str, Any]] = field(default_factory=list)
    calibration: CalibrationResult | None = None
    output_dir: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        return self.calibration.temperature if self.calibration else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["temperature"] = self.temperature
        return d


def _check_trainable(labels: Sequence[str], label_names: Sequence[str], args: TrainingArguments) -> None:
    """Refuse sets that cannot give a meaningful surrogate (ValueError with the reason)."""
    if len(labels) < args.min_items:
        raise ValueError(f"only {len(labels)} labelled items; at least {args.min_items} are needed to train")
    unknown = sorted(set(labels) - set(label_names))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in label_names {list(label_names)}")
    counts = Counter(labels)
    usable = [y for y, c in counts.items() if c >= args.min_per_label]
    if len(counts) < 2:
        raise ValueError(
            f"all {len(labels)} items have the same label {next(iter(counts))!r}; nothing to learn"
        )
    if len(usable) < 2:
        raise ValueError(
            f"fewer than two labels have {args.min_per_label}+ items (counts: {dict(counts)}); nothing to learn"
        )


class SurrogateTrainer:
    """Owns one fine-tuning run: ``train`` -> ``evaluate`` / ``calibrate`` -> ``save``."""

    def __init__(
        self, args: TrainingArguments | None = None, progress: ProgressCallback | None = None
    ) -> None:
        self.args = (args or TrainingArguments()).validate()
        self.progress = progress
        self.model: Any = None
        self.tokenizer: Any = None
        self.label_names: list[str] = []
        self.temperature = 1.0
        self.result: TrainResult | None = None
        self._val: tuple[list[list[int]], list[int]] = ([], [])

    # ------------------------------------------------------------------ helpers
    def _threads(self) -> Callable[[], None]:
        """Apply ``num_threads`` and return a function restoring the previous setting."""
        import torch

        previous = torch.get_num_threads()
        if self.args.num_threads:
            torch.set_num_threads(self.args.num_threads)
        return lambda: torch.set_num_threads(previous)

    def _logits(self, encoded: Sequence[Sequence[int]]) -> np.ndarray:
        self.model.eval()
        return batched_logits(self.model, encoded, self._pad_id(), max(32, self.args.batch_size))

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    def _init_head_by_linear_probe(self, encoded: Sequence[Sequence[int]], targets: Sequence[int]) -> None:
        """Set the classifier from a logistic regression on the frozen pooled outputs.

        Skipped (with a log line) for heads other than one linear layer over the pooled output.
        """
        import torch
        from sklearn.linear_model import LogisticRegression

        head = getattr(self.model, "classifier", None)
        base = getattr(self.model, "base_model", None)
        if not isinstance(head, torch.nn.Linear) or base is None:
            logger.info("linear-probe head init skipped: head is %s", type(head).__name__)
            return
        feats = []
        self.model.eval()
        with torch.inference_mode():
            for b in range(0, len(encoded), 32):
                input_ids, mask = collate(list(encoded[b : b + 32]), self._pad_id())
                out = base(input_ids=input_ids, attention_mask=mask)
                pooled: Any
                if uses_mean_pooling(self.model):
                    from poodle_vllm.train.modeling import masked_mean

                    pooled = masked_mean(out.last_hidden_state, mask)
                else:
                    pooled = getattr(out, "pooler_output", None)
                if pooled is None:
                    logger.info("linear-probe head init skipped: the encoder has no pooler")
                    self.model.train()
                    return
                feats.append(pooled.float().numpy())
        self.model.train()
        x = np.concatenate(feats)
        clf = LogisticRegression(max_iter=1000, class_weight="balanced").fit(x, list(targets))
        k = head.out_features
        weight = np.zeros((k, x.shape[1]))
        bias = np.zeros(k)
        if len(clf.classes_) == 2:  # binary: one coefficient vector for the logit difference
            c0, c1 = (int(c) for c in clf.classes_)
            weight[c1], bias[c1] = clf.coef_[0] / 2, clf.intercept_[0] / 2
            weight[c0], bias[c0] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
        else:
            for row, c in enumerate(clf.classes_):
                weight[int(c)], bias[int(c)] = clf.coef_[row], clf.intercept_[row]
        with torch.no_grad():
            head.weight.copy_(torch.tensor(weight, dtype=head.weight.dtype))
            if head.bias is not None:
                head.bias.copy_(torch.tensor(bias, dtype=head.bias.dtype))
        logger.info(
            "classifier head initialised by a linear probe (train accuracy %.3f)", clf.score(x, list(targets))
        )

    def _eval_encoded(self, encoded: Sequence[Sequence[int]], targets: Sequence[int]) -> EvalResult:
        logits = self._logits(encoded)
        pred = logits.argmax(axis=-1) if len(logits) else np.zeros(0, dtype=np.int64)
        t = np.asarray(targets, dtype=np.int64)
        recall: dict[str, float] = {}
        f1s = []
        for k, name in enumerate(self.label_names):
            tp = int(((pred == k) & (t == k)).sum())
            fp = int(((pred == k) & (t != k)).sum())
            fn = int(((pred != k) & (t == k)).sum())
            if tp + fn:
                recall[name] = tp / (tp + fn)
                f1s.append(2 * tp / (2 * tp + fp + fn))
        majority = Counter(targets).most_common(1)[0][1] / len(targets) if len(targets) else 0.0
        return EvalResult(
            accuracy=float((pred == t).mean()) if len(t) else 0.0,
            items=len(t),
            nll=nll(logits / self.temperature, t) if len(t) else 0.0,
            macro_f1=float(np.mean(f1s)) if f1s else 0.0,
            majority_share=majority,
            per_label_recall=recall,
        )

    # ------------------------------------------------------------------ verbs
    def train(
        self,
        base_model_dir: str | Path,
        texts: Sequence[str],
        labels: Sequence[str],
        label_names: Sequence[str] | None = None,
        soft_labels: Sequence[Sequence[float]] | None = None,
    ) -> TrainResult:
        """Fine-tune ``base_model_dir`` on ``(texts, labels)``; the best-on-validation weights are kept."""
        import torch
        args = self.args
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        names = list(label_names) if label_names is not None else sorted(set(labels))
        _check_trainable(labels, names, args)
        if soft_labels is not None and len(soft_labels) != len(labels):
            raise ValueError("soft_labels must have one distribution per item")
        base_model_dir = Path(base_model_dir)
        if not (base_model_dir / "config.json").exists():
            raise FileNotFoundError(f"base model folder {base_model_dir} has no config.json")

        restore_threads = self._threads()
        t_start = time.perf_counter()
        try:
            random.seed(args.seed)
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            self.label_names = names
            self.temperature = 1.0
            label_index = {n: i for i, n in enumerate(names)}
            self.tokenizer = load_tokenizer(base_model_dir)
            # Seeded just before construction so the new classifier head is reproducible.
            torch.manual_seed(args.seed)
            from transformers.utils import logging as hf_logging

            # The "classifier weights newly initialised" load report is expected here, not news.
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                self.model = build_classifier(base_model_dir, names, args.pooling)
            finally:
                hf_logging.set_verbosity(verbosity)
            if self.model.config.pad_token_id is None and self.tokenizer.pad_token_id is not None:
                self.model.config.pad_token_id = self.tokenizer.pad_token_id

            encoded, truncated = encode_texts(self.tokenizer, texts, args.max_length)
            targets = [label_index[y] for y in labels]
            train_idx, val_idx = stratified_split(labels, args.val_fraction, args.seed)
            self._val = ([encoded[i] for i in val_idx], [targets[i] for i in val_idx])
            soft = None
            if args.soft_labels and soft_labels is not None:
                soft = torch.tensor(np.asarray(soft_labels, dtype=np.float32))

            counts = np.bincount([targets[i] for i in train_idx], minlength=len(names)).astype(np.float64)
            weight = None
            if args.class_weights:
                w = np.where(
                    counts > 0, counts.sum() / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0
                )
                weight = torch.tensor(w, dtype=torch.float32)

            steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
            # Small sets get more epochs so the run has at least min_steps optimisation steps.
            epochs = max(args.epochs, min(20, math.ceil(args.min_steps / max(1, steps_per_epoch))))
            total_steps = steps_per_epoch * epochs
            warmup = int(total_steps * args.warmup_ratio)
            no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
            head_prefixes = ("classifier.", "pre_classifier.", "score.")
            named = list(self.model.named_parameters())
            head = [p for n, p in named if n.startswith(head_prefixes)]
            body = [(n, p) for n, p in named if not n.startswith(head_prefixes)]
            groups = [
                {
                    "params": [p for n, p in body if not n.endswith(no_decay)],
                    "weight_decay": args.weight_decay,
                },
                {"params": [p for n, p in body if n.endswith(no_decay)], "weight_decay": 0.0},
                {"params": head, "weight_decay": 0.0, "lr": args.head_learning_rate},
            ]
            optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)  # LambdaLR scales each group's lr

            def lr_factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / max(1, warmup)
                return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

            if args.head_init == "linear_probe":
                self._init_head_by_linear_probe(
                    [encoded[i] for i in train_idx], [targets[i] for i in train_idx]
                )
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
            loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
            rng = random.Random(args.seed)

            history: list[dict[str, Any]] = []
            best_acc, best_nll, best_state, bad_evals = -1.0, math.inf, None, 0
            step, stopped = 0, "epochs"
            running_loss, running_n = 0.0, 0
            pad_id = self._pad_id()

            def evaluate_now(epoch_pos: float) -> bool:
                """Evaluate, keep the best weights; True when early stopping triggers."""
                nonlocal best_acc, best_nll, best_state, bad_evals
                ev = self._eval_encoded(*self._val)
                self.model.train()
                entry = {
                    "step": step,
                    "epoch": round(epoch_pos, 3),
                    "val_agreement": ev.accuracy,
                    "val_nll": ev.nll,
                    "train_loss": running_loss / max(1, running_n),
                    "elapsed_s": time.perf_counter() - t_start,
                }
                history.append(entry)
                logger.info(
                    "step %d epoch %.2f: val agreement %.4f (nll %.3f)", step, epoch_pos, ev.accuracy, ev.nll
                )
                if self.progress:
                    self.progress({"event": "eval", **entry})
                # Higher agreement wins; among equal agreements the lower validation NLL (a
                # saturated agreement, e.g. 1.0 on an easy task, must not freeze an early checkpoint).
                if (ev.accuracy, -ev.nll) > (best_acc, -best_nll):
                    best_acc, best_nll, bad_evals = ev.accuracy, ev.nll, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                    return False
                bad_evals += 1
                return bool(args.early_stopping_patience) and bad_evals >= args.early_stopping_patience

            self.model.train()
            done = False
            last_eval_step = -1
            for epoch in range(epochs):
                order = list(train_idx)
                rng.shuffle(order)
                for b in range(steps_per_epoch):
                    idx = order[b * args.batch_size : (b + 1) * args.batch_size]
                    if not idx:
                        continue
                    input_ids, mask = collate([encoded[i] for i in idx], pad_id)
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits
                    if soft is not None:
                        q = soft[idx]
                        logp = torch.log_softmax(logits, dim=-1)
                        per_item = -(q * logp).sum(-1)
                        if weight is not None:
                            per_item = per_item * (q * weight).sum(-1)
                        loss = per_item.mean()
                    else:
                        loss = loss_fn(logits, torch.tensor([targets[i] for i in idx]))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if args.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    running_loss += float(loss.detach()) * len(idx)
                    running_n += len(idx)
                    if args.log_every_steps and step % args.log_every_steps == 0:
                        info = {
                            "event": "step",
                            "step": step,
                            "total_steps": total_steps,
                            "epoch": epoch + (b + 1) / steps_per_epoch,
                            "loss": running_loss / running_n,
                            "lr": scheduler.get_last_lr()[0],
                            "elapsed_s": time.perf_counter() - t_start,
                        }
                        logger.debug("%s", info)
                        if self.progress:
                            self.progress(info)
                    epoch_pos = epoch + (b + 1) / steps_per_epoch
                    if args.eval_every_steps and step % args.eval_every_steps == 0:
                        last_eval_step = step
                        if evaluate_now(epoch_pos):
                            stopped, done = "early_stopping", True
                            break
                    if args.time_budget_s is not None and time.perf_counter() - t_start > args.time_budget_s:
                        stopped, done = "time_budget", True
                        break
                if done:
                    break
                if not args.eval_every_steps:
                    last_eval_step = step
                    if evaluate_now(epoch + 1.0):
                        stopped = "early_stopping"
                        break
                running_loss, running_n = 0.0, 0
            if last_eval_step != step:  # stopped by the budget between evaluations
                evaluate_now(step / steps_per_epoch)
            if best_state is not None:
                self.model.load_state_dict(best_state)
            self.model.eval()
            train_time = time.perf_counter() - t_start
            self.result = TrainResult(
                base_model=str(base_model_dir),
                label_names=names,
                train_items=len(train_idx),
                val_items=len(val_idx),
                best_val_agreement=best_acc,
                val_majority_share=Counter(self._val[1]).most_common(1)[0][1] / max(1, len(self._val[1])),
                epochs_run=round(step / steps_per_epoch, 3),
                steps=step,
                train_time_s=train_time,
                stopped_reason=stopped,
                truncated_share=sum(truncated) / len(truncated),
                history=history,
                args=args.to_dict(),
            )
            if args.calibrate:
                self.calibrate()
            logger.info(
                "trained %s on %d items in %.1fs: val agreement %.4f (%s)",
                base_model_dir.name,
                len(train_idx),
                train_time,
                best_acc,
                stopped,
            )
            return self.result
        finally:
            restore_threads()

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError("no model yet: call train() first")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated class probabilities (columns follow ``label_names``)."""
        self._require_model()
        encoded, _ = encode_texts(self.tokenizer, texts, self.args.max_length)
        return softmax(self._logits(encoded), self.temperature)

    def evaluate(self, texts: Sequence[str], labels: Sequence[str]) -> EvalResult:
        """Accuracy (agreement, when ``labels`` are the LLM's), NLL, macro-F1 on any labelled set."""
        self._require_model()
        index = {n: i for i, n in enumerate(self.label_names)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not in the model's labels {self.label_names}")
        restore = self._threads()
        try:
            encoded, truncated = encode_texts(self.tokenizer, texts, self.args.max_length)
            ev = self._eval_encoded(encoded, [index[y] for y in labels])
        finally:
            restore()
        ev.truncated = sum(truncated)
        return ev

    def calibrate(self) -> CalibrationResult:
        """Fit the softmax temperature on the validation split; the NLL before and after is reported."""
        self._require_model()
        encoded, targets = self._val
        if not targets:
            raise RuntimeError("no validation split to calibrate on")
        restore = self._threads()
        try:
            cal = fit_temperature(self._logits(encoded), targets)
        finally:
            restore()
        self.temperature = cal.temperature
        if self.result is not None:
            self.result.calibration = cal
        logger.info(
            "calibrated: T=%.3f, validation NLL %.4f -> %.4f", cal.temperature, cal.nll_before, cal.nll_after
        )
        return cal

    def build_metadata(self, **fields: Any) -> SurrogateMetadata:
        """``poodle.json`` contents for the current model; ``fields`` override or add (task_id, ...)."""
        self._require_model()
        r = self.result
        meta = SurrogateMetadata(
            label_names=list(self.label_names),
            base_model=r.base_model if r else "",
            training_items=r.train_items if r else 0,
            validation_items=r.val_items if r else 0,
            validation_agreement=r.best_val_agreement if r else None,
            calibration_temperature=self.temperature,
            max_length=self.args.max_length,
            training_time_s=r.train_time_s if r else 0.0,
            extra={"train_result": r.to_dict() if r else None},
        )
        extra = fields.pop("extra", None)
        for key, value in fields.items():
            if not hasattr(meta, key):
                raise ValueError(f"unknown metadata field {key!r}")
            setattr(meta, key, value)
        if extra:
            meta.extra.update(extra)
        return meta

    def write_model(self, folder: Path) -> None:
        """Save weights (safetensors) and tokenizer into ``folder`` (used by the artifact writers)."""
        from transformers.utils import logging as hf_logging

        self._require_model()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            save_classifier(self.model, folder)
            self.tokenizer.save_pretrained(folder)
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    def save(
        self, output_dir: str | Path, metadata: SurrogateMetadata | dict[str, Any] | None = None
    ) -> Path:
        """Write the surrogate folder atomically (temp folder, renamed on success)."""
        if isinstance(metadata, SurrogateMetadata):
            meta = metadata
        else:
            meta = self.build_metadata(**(metadata or {}))
        path = write_artifact(output_dir, self.write_model, meta)
        if self.result is not None:
            self.result.output_dir = str(path)
        return path


def fine_tune(
    base_model_dir: str | Path,
    texts: Sequence[str],
    labels: Sequence[str],
    args: TrainingArguments | None = None,
    output_dir: str | Path | None = None,
    *,
    label_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """One call: train (and calibrate), optionally save to ``output_dir``; returns the result."""
    trainer = SurrogateTrainer(args)
    result = trainer.train(base_model_dir, texts, labels, label_names)
    if output_dir is not None:
        trainer.save(output_dir, metadata)
    return result
