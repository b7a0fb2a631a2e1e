"""The language-model task: text files, windows, metrics, sampling, the Shakespeare split, bad input."""

import math

import pytest
import torch

from tests.conftest import run_zoo
from zoo.errors import ConfigError, DataError
from zoo.models import gpt as G
from zoo.tasks.language_model import LanguageModelTask, TextWindows, decode, encode, read_text_file

VOCAB = "\n abcdefghijklmnopqrstuvwxyz.,"
TINY = dict(vocab=VOCAB, context_length=32, dim=32, depth=2, heads=2, ffn_hidden=64)


def _config(**extra):
    return {**TINY, **extra}


def test_text_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_text_file(empty)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(DataError, match="binary"):
        read_text_file(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_text_file(latin)
    with pytest.raises(DataError, match="no such file"):
        read_text_file(tmp_path / "missing.txt")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a\r\nb\rc")
    assert read_text_file(crlf) == "a\nb\nc"


def test_encode_names_unknown_characters():
    assert decode(encode("hello, world.", VOCAB), VOCAB) == "hello, world."
    with pytest.raises(DataError, match=r"outside the model's vocabulary: 'H', '!'"):
        encode("Hello!", VOCAB)


def test_windows_score_every_character_once():
    ids = torch.arange(100) % 7
    windows = TextWindows(ids, 16)
    assert len(windows) == 99 // 16
    targets = torch.cat([windows[i][1:] for i in range(len(windows))])
    assert torch.equal(targets, ids[1:1 + 16 * len(windows)])
    assert all(len(windows[i]) == 17 for i in range(len(windows)))


def test_file_dataset_splits_and_context_limit(tmp_path):
    path = tmp_path / "corpus.txt"
    text = ("the quick brown fox jumps over the lazy dog.\n" * 40)
    path.write_text(text)
    task = LanguageModelTask()
    model = G.gpt(**TINY)
    train = task.load_dataset("text", "train", str(path), model, {})
    test = task.load_dataset("text", "test", str(path), model, {})
    everything = task.load_dataset("text", "all", str(path), model, {})
    cut = int(len(text) * 0.9)
    assert train.ids.numel() == cut and test.ids.numel() == len(text) - cut
    assert everything.ids.numel() == len(text)
    assert train[0].numel() == 33
    assert task.load_dataset("text", "train", str(path), model, {"seq_len": 8})[0].numel() == 9
    with pytest.raises(ConfigError, match="longer than the model's context of 32"):
        task.load_dataset("text", "train", str(path), model, {"seq_len": 64})
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        task.load_dataset("text", "train", str(path), G.gpt(**_config(vocab="abc\n ")), {})
    no_tokenizer = G.gpt(**{k: v for k, v in TINY.items() if k != "vocab"}, vocab_size=50)
    with pytest.raises(ConfigError, match="no character vocabulary"):
        task.load_dataset("text", "train", str(path), no_tokenizer, {})
    with pytest.raises(DataError, match="give it with --data PATH"):
        task.load_dataset("text", "train", None, model, {})


def test_models_implement_the_task_protocol():
    from zoo.tasks.language_model import LanguageModel

    for extra in ({}, {"noble": {"rank": 4}}, {"versatile": {"num_experts": 4, "top_k": 2}}):
        assert isinstance(G.gpt(**_config(**extra)), LanguageModel)
    assert not isinstance(torch.nn.Linear(2, 2), LanguageModel)
    assert LanguageModelTask.model_protocol is LanguageModel


def test_options_declare_every_key_the_task_reads():
    from zoo.options import validate

    schema = LanguageModelTask.Options
    got = validate({"max-new-tokens": "12", "temperature": "0", "top_k": 5, "progress": "false", "seq_len": 8},
                   schema, "language models")
    assert got == {"max_new_tokens": 12, "temperature": 0.0, "top_k": 5, "progress": False, "seq_len": 8}
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        validate({"temprature": 1}, schema, "language models")
    assert set(LanguageModelTask.metric_definitions) >= {"loss", "bpc", "perplexity", "tokens", "mean_loops"}


def test_eval_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    import zoo.progress as lm

    model = G.gpt(**TINY)
    data = TextWindows(encode("abc abc abc " * 40, VOCAB), 8)
    monkeypatch.setattr(lm, "PROGRESS_EVERY_S", 0.0)
    quiet = LanguageModelTask().evaluate(model, data, {"batch_size": 8, "progress": False})
    assert capsys.readouterr().err == ""
    loud = LanguageModelTask().evaluate(model, data, {"batch_size": 8})
    lines = capsys.readouterr().err.strip().splitlines()
    n = math.ceil(len(data) / 8)
    assert len(lines) == n - 1 and lines[0].startswith(f"eval: 1/{n} (")
    assert quiet == loud
    monkeypatch.setattr(lm, "PROGRESS_EVERY_S", 3600.0)      # a quick loop on a log stays silent
    LanguageModelTask().evaluate(model, data, {"batch_size": 8})
    assert capsys.readouterr().err == ""


def test_metrics_of_a_uniform_model_are_exact():
    """Zero logits give loss ln V exactly: pins the nats, bits-per-char and perplexity arithmetic."""
    model = G.gpt(**TINY)
    torch.nn.init.zeros_(model.head.weight)
    ids = encode("abc abc abc " * 20, VOCAB)
    metrics = LanguageModelTask().evaluate(model, TextWindows(ids, 32), {})
    v = len(VOCAB)
    assert metrics["loss"] == pytest.approx(math.log(v), rel=1e-5)
    assert metrics["bpc"] == pytest.approx(math.log2(v), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(v, rel=1e-4)
    assert metrics["tokens"] == ((ids.numel() - 1) // 32) * 32


@pytest.mark.parametrize("extra", [{}, {"noble": {"rank": 8}}, {"versatile": {"num_experts": 4, "top_k": 2}}])
def test_training_learns_a_repetitive_text(extra):
    torch.manual_seed(0)
    task = LanguageModelTask()
    model = G.gpt(**_config(**extra))
    ids = encode("to be or not to be, that is the question.\n" * 30, VOCAB)
    data = TextWindows(ids, 32)
    module = task.training_module(model, {})
    opt = torch.optim.AdamW(module.param_groups(3e-3), lr=3e-3)
    before = task.evaluate(model, data, {})["bpc"]
    model.train()
    for step in range(60):
        batch = task.collate([data[(step * 4 + j) % len(data)] for j in range(4)])
        loss, logs = module(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.evaluate(model, data, {})
    assert before > 4.0 and after["bpc"] < 1.0
    if "versatile" in extra:
        assert "balance_loss" in logs and 1.0 <= after["mean_loops"] <= 4.0


def test_predict_samples_and_checks_the_prompt():
    torch.manual_seed(0)
    task = LanguageModelTask()
    model = G.gpt(**TINY)
    out = task.predict(model, "to be", None, None, {"max_new_tokens": 40, "seed": 3})
    again = task.predict(model, "to be", None, None, {"max_new_tokens": 40, "seed": 3})
    assert out["completion"] == again["completion"] and len(out["completion"]) == 40
    assert set(out["completion"]) <= set(VOCAB)
    greedy = task.predict(model, "to be", None, None, {"max_new_tokens": 5, "temperature": 0})
    with torch.no_grad():
        first = model(encode("to be", VOCAB)[None])[0, -1].argmax()
    assert greedy["completion"][0] == VOCAB[int(first)]
    with pytest.raises(DataError, match="outside the model's vocabulary: 'T'"):
        task.predict(model, "To be", None, None, {})
    with pytest.raises(DataError, match="longer than the model's context of 32"):
        task.predict(model, "a" * 33, None, None, {})
    with pytest.raises(ConfigError, match="max-new-tokens"):
        task.predict(model, "a", None, None, {"max_new_tokens": -1})


def test_predict_saves_text_and_picture(tmp_path):
    task = LanguageModelTask()
    model = G.gpt(**TINY)
    task.predict(model, "to be", None, tmp_path / "sample.txt", {"max_new_tokens": 10})
    assert (tmp_path / "sample.txt").read_text().startswith("to be")
    task.predict(model, "to be", None, tmp_path / "sample.png", {"max_new_tokens": 10})
    assert (tmp_path / "sample.png").read_bytes()[:4] == b"\x89PNG"


def test_shakespeare_split_by_work():
    from zoo.data import shakespeare

    names = {split: shakespeare.split_works(split) for split in shakespeare.SPLITS}
    assert len(names["train"]) + len(names["val"]) + len(names["test"]) == 42
    assert not set(names["train"]) & (set(names["val"]) | set(names["test"]))
    test_text = shakespeare.load_split("test")
    train_text = shakespeare.load_split("train")
    assert "HAMLET, PRINCE OF DENMARK" in test_text and "HAMLET, PRINCE OF DENMARK" not in train_text
    assert len(train_text) == 4_391_793 and len(test_text) == 441_610
    assert "".join(sorted(set(train_text + test_text + shakespeare.load_split("val")))) == shakespeare.VOCAB


def test_cli_bad_input_is_one_line(tmp_path):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02abc")
    done = run_zoo("finetune", "gpt-mini", "--data", str(binary), "--steps", "1", "--out", str(tmp_path / "run"))
    assert done.returncode != 0
    lines = [ln for ln in (done.stdout + done.stderr).strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "binary" in lines[0], lines


@pytest.mark.parametrize("name", ["gpt-mini", "noble-gpt-mini", "versatileffn-mini"])
def test_published_checkpoint_is_trained(name):
    """The hub checkpoint loads (sha256-checked), and on 16 windows of the unseen test plays it is
    far better than chance (uniform over 84 characters = 6.39 bits per character)."""
    from torch.utils.data import Subset

    import zoo
    from zoo.registry import load_registry

    model = zoo.create_model(name, pretrained=True)
    task = LanguageModelTask()
    entry = load_registry().models[name]
    test = task.load_dataset("shakespeare", "test", None, model, {})
    metrics = task.evaluate(model, Subset(test, range(0, len(test), len(test) // 16)[:16]), {})
    assert metrics["bpc"] < 3.0
    assert entry.checkpoints["shakespeare"].metrics["bpc"] < 3.0
