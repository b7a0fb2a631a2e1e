"""The checkpoint hub: where weights come from, and why they can be trusted.

One module per job:
- `sources`  which hubs (--hub, $ZOO_HUB, the project's ./hub, $HF_ENDPOINT) and where a push goes;
- `pull`     a checkpoint's files, each checked against its sha256 pin in registry.yaml;
- `push`     publish a checkpoint folder with its model card, and the registry entry to paste;
- `cache`    the local Hugging Face cache: ls (size, last use), verify against the pins, rm, prune;
- `download` one file over HTTP: resumable (range requests), time-bounded, retries only logged;
- `revision` the deterministic revision of a folder repo (what push reports for folder hubs);
- `mirror`   folder hub -> git repos for an olah mirror (`python -m zoo.hub mirror`); tests use it.

Depends only on zoo.registry, zoo.checkpoint, zoo.card, zoo._io and zoo.errors. Importing it costs
neither torch nor huggingface_hub: each submodule imports those inside the functions that need them.
"""

from __future__ import annotations

from zoo._io import sha256_file
from zoo.card import make_model_card
from zoo.hub.cache import cache_check, cache_ls, cache_prune, cache_rm, cache_verify, hf_cache_dir
from zoo.hub.mirror import build_git_repo, build_mirror, hub_repos
from zoo.hub.pull import pull, pull_checkpoint, pull_model
from zoo.hub.push import push, registry_snippet
from zoo.hub.revision import folder_revision, is_lfs, lfs_pointer, published_files
from zoo.hub.sources import PUBLIC_HUB, is_url, project_hub_dir, push_target, sources

__all__ = [
    "PUBLIC_HUB", "build_git_repo", "build_mirror", "cache_check", "cache_ls", "cache_prune", "cache_rm", "cache_verify",
    "folder_revision", "hf_cache_dir", "hub_repos", "is_lfs", "is_url", "lfs_pointer", "make_model_card",
    "project_hub_dir", "published_files", "pull", "pull_checkpoint", "pull_model", "push", "push_target",
    "registry_snippet", "sha256_file", "sources",
]
