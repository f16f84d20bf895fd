"""Model folders named by a Hugging Face Hub id (`maxin-cn/Latte-1`): resolved through `huggingface_hub`'s cache.

A path to an existing folder is used as is. Anything else that reads as a hub id is fetched with
`snapshot_download`, which honours the cache (`HF_HOME` / `HF_HUB_CACHE` or `cache_dir`), `revision`, `token`
and offline mode (`HF_HUB_OFFLINE=1` or `local_files_only=True`: only a snapshot already in the cache is used).
Online, the repository's file list decides which weight files to fetch (the requested `variant`,
safetensors before `.bin` unless `use_safetensors` says otherwise), so nothing unneeded is downloaded; offline,
the cached snapshot is returned and the component loaders name any weight file it lacks.
"""

import logging
import os
import re
from fnmatch import fnmatch
from pathlib import Path

from latte.models.io import WEIGHTS_NAME, add_variant, weights_candidates

logger = logging.getLogger(__name__)

TRANSFORMERS_WEIGHTS_NAME = "model.safetensors"
# Component folder -> the weights file name its library writes (None: no weights).
PIPELINE_WEIGHTS = {
    "transformer": WEIGHTS_NAME,
    "vae": WEIGHTS_NAME,
    "text_encoder": TRANSFORMERS_WEIGHTS_NAME,
    "tokenizer": None,
    "scheduler": None,
}
# `org/name` or a bare `name`, as the Hub allows: letters, digits, `-`, `_`, `.`; no `..`, no leading `.`.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def is_repo_id(name: str | os.PathLike) -> bool:
    return isinstance(name, str) and bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith(".")


def _weight_forms(folder: str, weights_name: str, variant: str | None, use_safetensors: bool | None) -> list:
    """Glob patterns, relative to the repository root, for each form of weights the loaders accept, in their
    order: a single file `[NAME]`, or a sharded one `[INDEX, SHARDS]`."""
    forms = []
    for name in weights_candidates(weights_name, variant, use_safetensors):
        if name.endswith(".json"):  # an index; shards are `NAME[.variant]-00001-of-00002.ext`
            single = add_variant(weights_name if ".safetensors" in name else weights_name.replace(
                ".safetensors", ".bin"), variant)
            stem, ext = single.rsplit(".", 1)
            forms.append([_join(folder, name), _join(folder, f"{stem}-*-of-*.{ext}")])
        else:
            forms.append([_join(folder, name)])
    return forms


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def select_patterns(
    components: dict[str, str | None], variant: str | None = None, use_safetensors: bool | None = None,
    repo_files: list[str] | None = None, subfolder: str | None = None,
) -> list[str]:
    """`allow_patterns` for `snapshot_download`: `model_index.json`, each component's JSON and tokenizer files,
    and, given the repository's file list, the first weights form present (single file before shards,
    safetensors before `.bin`), so e.g. `.bin` copies beside safetensors are not fetched. Without the list
    (offline) no weight patterns are given: the cached snapshot is used as it is."""
    patterns = [_join(subfolder or "", "model_index.json")]
    for component, weights_name in components.items():
        folder = _join(subfolder or "", component)
        patterns += [_join(folder, "*.json"), _join(folder, "*.model"), _join(folder, "*.txt")]
        if weights_name is None or repo_files is None:
            continue
        forms = _weight_forms(folder, weights_name, variant, use_safetensors)
        present = [form for form in forms if any(fnmatch(f, form[0]) for f in repo_files)]
        patterns += present[0] if present else forms[0]  # absent: the loader names the missing file
    return patterns


HUB_KEYWORDS = ("revision", "cache_dir", "local_files_only", "token", "force_download")


def hub_options(options: dict, caller: str) -> dict:
    """The hub keywords among a model's `from_pretrained` keywords; `low_cpu_mem_usage` is accepted and has
    no effect (models are built on the meta device anyway); any other keyword, e.g. diffusers' `max_memory`,
    is a ValueError naming it rather than a TypeError."""
    unknown = sorted(set(options) - set(HUB_KEYWORDS) - {"low_cpu_mem_usage"})
    if unknown:
        raise ValueError(f"{caller} does not support {', '.join(unknown)}; it takes subfolder, torch_dtype, device, "
                         f"variant, use_safetensors, device_map, {', '.join(HUB_KEYWORDS)}")
    return {k: v for k, v in options.items() if k in HUB_KEYWORDS}


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def resolve_model_folder(
    name_or_path: str | os.PathLike,
    components: dict[str, str | None],
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
) -> Path:
    """The local folder for `name_or_path`: the folder itself when it exists, else the hub snapshot of that id
    (downloaded if needed and allowed), with `subfolder` appended. `components` maps each component folder to
    its weights file name (None: no weights); `{"": WEIGHTS_NAME}` for a single model repository. Errors are one
    line: FileNotFoundError when neither a folder nor a cached or downloadable snapshot exists."""
    path = Path(name_or_path)
    if path.is_dir():
        return path / (subfolder or "")
    if not is_repo_id(str(name_or_path)):
        raise FileNotFoundError(f"model folder not found: {path}")
    import huggingface_hub
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = str(name_or_path)
    is_offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)
    offline = bool(local_files_only) or is_offline()
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    where = f"{repo_id!r}{f' (revision {revision!r})' if revision else ''}"
    try:
        repo_files = None
        if not offline:
            repo_files = huggingface_hub.HfApi().list_repo_files(repo_id, revision=revision, token=token)
        patterns = select_patterns(components, variant, use_safetensors, repo_files, subfolder)
        snapshot = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline, token=token,
            allow_patterns=patterns, force_download=force_download)
    except LocalEntryNotFoundError as err:
        if offline:
            raise FileNotFoundError(
                f"{where} is no local folder and no complete snapshot of it is in the Hugging Face cache {cache}; "
                "downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True): fetch it once online or pass a "
                "model folder") from err
        raise FileNotFoundError(f"cannot fetch {where} from the Hugging Face Hub: {_one_line(err)}") from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"revision {revision!r} not found in the Hub repository {repo_id!r}") from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(
            f"{repo_id!r} is no local folder and no Hugging Face Hub repository (or a private or gated one: "
            "pass token=...)") from err
    except (OSError, ValueError) as err:  # connection errors, invalid ids, HTTP errors: one line, not the stack
        raise FileNotFoundError(f"cannot fetch {where} from the Hugging Face Hub: {_one_line(err)}") from err
    logger.debug("%s resolved to %s", repo_id, snapshot)
    return Path(snapshot) / (subfolder or "")
