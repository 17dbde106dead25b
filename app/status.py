"""What the app shell shows, written once for both front ends (desktop and web).

The desktop window (:mod:`app.desktop`) and the web UI (:mod:`app.web`) only lay
out what this module computes, so the two never disagree about the data folder,
the installed models or the instructions for getting weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llamavid.hub import catalog
from llamavid.hub.catalog import CatalogEntry
from llamavid.hub.installed import InstalledEntry, list_models
from llamavid.paths import DataDir
from llamavid.system import llamavid_version

__all__ = [
    "TITLE",
    "TAGLINE",
    "NEEDS_MODEL",
    "GET_MODELS_HEADING",
    "CHAT_MODELS",
    "AppStatus",
    "collect_status",
    "instructions_markdown",
    "models_markdown",
    "status_markdown",
]

TITLE = "llamavid"
TAGLINE = "A local-first movie assistant around the LLaMA-VID video LLM."
NEEDS_MODEL = "Chatting needs a model: until one is installed, this page shows how to get one."
GET_MODELS_HEADING = "How to get model weights"

#: The released checkpoints the apps offer to download: the chat models that read a film (an image
#: checkpoint chats too, but spends 256 or more tokens per frame, so no film fits its context).
CHAT_MODELS: list[CatalogEntry] = [e for e in catalog.chat_models(catalog.MODELS) if e.kind != "image"]


@dataclass(frozen=True)
class AppStatus:
    """A snapshot of the setup, taken when a front end opens or refreshes."""

    data_dir: Path
    models_dir: Path
    models: list[InstalledEntry]
    version: str

    @property
    def has_models(self) -> bool:
        """A model to chat with (:func:`llamavid.hub.catalog.can_chat`): speech-recognition models (for
        the indexer), base LLMs and stage-1 projectors do not count."""
        return any(catalog.can_chat(m.kind) for m in self.models)


def collect_status(data_dir: Path | str) -> AppStatus:
    """Look at the data folder now (cheap: a directory listing and file sizes)."""
    dd = DataDir(Path(data_dir))
    return AppStatus(data_dir=dd.root, models_dir=dd.models, models=list_models(dd), version=llamavid_version())


def instructions_markdown(status: AppStatus) -> str:
    """Step-by-step text for getting a checkpoint into the data folder (Markdown)."""
    first_name = CHAT_MODELS[0].name
    repos = "\n".join(f"   - `{e.repo_id}`: {e.purpose}" for e in CHAT_MODELS)
    return (
        f"### {GET_MODELS_HEADING}\n\n"
        f"No model is installed yet in `{status.models_dir}`.\n\n"
        f"1. The released LLaMA-VID checkpoints are on the Hugging Face hub, for example:\n{repos}\n"
        f"2. Download one with the model manager (resumable, verified; it also fetches the shared "
        f"`eva_vit_g.pth` and Q-Former vocabulary):\n\n"
        f"   `llamavid models pull {first_name}`\n\n"
        f"3. Or register a checkpoint folder you already have: `llamavid models add NAME FOLDER`, "
        f"or put (or symlink) it at `{status.models_dir}/<name>/`.\n"
        f"4. Press **Refresh**: the model is listed here.\n\n"
        f"A 7B checkpoint is about 14 GB on disk."
    )


def models_markdown(status: AppStatus) -> str:
    """The installed models as a Markdown list, or the instructions when there are none."""
    if not status.has_models:
        return instructions_markdown(status)
    lines = [f"### Installed models ({len(status.models)})", ""]
    lines += [f"- **{m.name}** ({m.kind}, {m.status}): {m.size_human}, `{m.path}`" for m in status.models]
    return "\n".join(lines)


def status_markdown(status: AppStatus) -> str:
    """Everything below the title: data folder, then models or instructions (Markdown)."""
    needs = "" if status.has_models else f"{NEEDS_MODEL}\n\n"
    return (f"{TAGLINE} Version {status.version}.\n\n{needs}**Data folder:** `{status.data_dir}`\n\n"
            f"{models_markdown(status)}")
