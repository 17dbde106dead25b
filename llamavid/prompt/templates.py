"""Conversation templates of the LLaMA-VID reference (spec 7), rendered byte-for-byte the same.

The rendered text is what the LLM was trained on, so the rendering rules keep the reference's
peculiarities (a falsy message renders as ``role + ":"`` with no separator, the separator after a
message alternates between ``sep`` and ``sep2`` by message index). Only failure modes are fixed:
``PLAIN`` with ``sep2=None`` no longer crashes (it falls back to ``sep``).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from llamavid.model.layout import IMAGE_TOKEN

Message = str | tuple | None

_VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.")
_LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")


class SeparatorStyle(Enum):
    SINGLE = "single"
    TWO = "two"
    PLAIN = "plain"


def _message_text(message: Message) -> Message:
    """Web-UI messages are (text, image, process_mode) tuples; only the text is rendered."""
    return message[0] if isinstance(message, tuple) else message


@dataclass
class Conversation:
    """A chat in one template; ``messages`` are ``[role, message]`` pairs, ``None`` = to be generated."""

    system: str
    roles: tuple[str, str]
    messages: list[list[Any]] = field(default_factory=list)
    offset: int = 0
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"
    name: str = ""

    def append_message(self, role: str, message: Message) -> None:
        self.messages.append([role, message])

    def append_user(self, message: Message) -> None:
        self.append_message(self.roles[0], message)

    def append_assistant(self, message: Message = None) -> None:
        """Without a message this opens the assistant turn the model is asked to complete."""
        self.append_message(self.roles[1], message)

    def copy(self) -> Conversation:
        return copy.deepcopy(self)

    def _rendered_messages(self) -> list[tuple[str, Message]]:
        """Messages as rendered: a tuple first message gets its ``<image>`` moved to the front."""
        messages = [(role, msg) for role, msg in self.messages]
        if messages and isinstance(messages[0][1], tuple):
            role, msg = messages[0]
            text = msg[0].replace(IMAGE_TOKEN, "").strip()
            messages[0] = (role, IMAGE_TOKEN + "\n" + text)
        return messages

    def get_prompt(self) -> str:
        messages = self._rendered_messages()
        if self.sep_style is SeparatorStyle.SINGLE:
            seps = [self.sep, self.sep]
            ret = self.system + self.sep
        elif self.sep_style is SeparatorStyle.TWO:
            seps = [self.sep, self.sep2 or ""]
            ret = self.system + self.sep
        elif self.sep_style is SeparatorStyle.PLAIN:
            seps = [self.sep, self.sep if self.sep2 is None else self.sep2]
            return self.system + "".join(
                str(_message_text(m)) + seps[i % 2] for i, (_, m) in enumerate(messages) if m)
        else:  # pragma: no cover - the enum is closed
            raise ValueError(f"unsupported separator style {self.sep_style}")
        for i, (role, message) in enumerate(messages):
            text = _message_text(message)
            ret += f"{role}: {text}{seps[i % 2]}" if text else f"{role}:"
        return ret

    render = get_prompt


_TEMPLATES: dict[str, Conversation] = {
    "llava_v0": Conversation(system=_LLAVA_SYSTEM, roles=("Human", "Assistant"),
                             sep_style=SeparatorStyle.SINGLE, sep="###", version="Unknown"),
    "llava_v1": Conversation(system=_LLAVA_SYSTEM, roles=("USER", "ASSISTANT"),
                             sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>", version="v1"),
    "vicuna_v1": Conversation(system=_VICUNA_SYSTEM, roles=("USER", "ASSISTANT"),
                              sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>", version="v1"),
    "imgsp_v1": Conversation(system=_VICUNA_SYSTEM, roles=("USER", "ASSISTANT"),
                             sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>", version="imgsp_v1"),
    "plain_guided": Conversation(system="", roles=("", ""), sep_style=SeparatorStyle.PLAIN,
                                 sep="\n", sep2=None, version="plain_guided"),
}
for _name, _conv in _TEMPLATES.items():
    _conv.name = _name

DEFAULT_TEMPLATE = "vicuna_v1"


def template_names() -> tuple[str, ...]:
    return tuple(_TEMPLATES)


def get_template(name: str) -> Conversation:
    """A fresh, empty conversation of template ``name`` (safe to mutate)."""
    try:
        return _TEMPLATES[name].copy()
    except (KeyError, TypeError):
        raise ValueError(f"unknown conversation template {name!r}; valid: {', '.join(_TEMPLATES)}") from None


# Fields only LLaMA-VID configs carry (plain LLaVA configs also have mm_vision_tower).
_LLAMAVID_CONFIG_KEYS = ("bert_type", "num_query", "compress_type")


def _config_fields(source: Any) -> tuple[dict, str]:
    """(config dict, model name) from a name/path, a config dict, a config object or a model."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        config_file = os.path.join(path, "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                return json.load(f), path
        return {}, path
    if isinstance(source, dict):
        return source, str(source.get("_name_or_path", ""))
    config = getattr(source, "config", source)
    fields = config.to_dict() if hasattr(config, "to_dict") else dict(getattr(config, "__dict__", {}))
    name = getattr(source, "name_or_path", "") or getattr(config, "name_or_path", "") \
        or fields.get("_name_or_path", "")
    return fields, str(name)


def default_template_for(config_or_model_name: Any) -> str:
    """Template a checkpoint was trained with: ``vicuna_v1`` for every LLaMA-VID model.

    The reference CLI picks ``llava_v1`` for names containing "v1"/"vid"; that template's "curious
    human" system prompt is not the ``imgsp_v1``/``vicuna_v1`` text LLaMA-VID was fine-tuned on (and
    evaluated with), so it is deliberately not reproduced. Recognised as LLaMA-VID: a name/path
    containing "vid", or a config with its Q-Former fields (bert_type, num_query, compress_type).
    Other LLaVA-named models get LLaVA's own choice (``llava_v1`` for v1 names, ``llava_v0``
    otherwise); anything else falls back to ``vicuna_v1``.
    """
    fields, name = _config_fields(config_or_model_name)
    lowered = name.lower()
    if "vid" in lowered or any(fields.get(k) is not None for k in _LLAMAVID_CONFIG_KEYS):
        return "vicuna_v1"
    if "llava" in lowered:
        return "llava_v1" if "v1" in lowered else "llava_v0"
    return DEFAULT_TEMPLATE
