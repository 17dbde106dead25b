"""Judged scores through any OpenAI-compatible ``/v1/chat/completions`` endpoint, cached on disk.

The paper's video scores come from a hosted GPT model that has changed since; here the judge is
whatever the user points at (OpenAI, a local server, this project's own server once it exists), its
name and the version it reports go into the results, and every reply is stored under a key made of the
model, the temperature and the exact messages. A re-run, or a second run of the same answers, asks
nothing twice.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from llamavid.errors import UserError
from llamavid.storage import write_json_atomic


@dataclass(frozen=True)
class JudgeSettings:
    base_url: str                 # e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    model: str                    # e.g. gpt-3.5-turbo-0613
    api_key: str | None = None    # None: servers that take no key
    temperature: float = 0.0      # the reference left the API default (1.0); 0 makes re-judging repeatable
    max_retries: int = 3
    timeout: float = 120.0


def cache_key(model: str, temperature: float, messages: list[dict[str, str]]) -> str:
    blob = json.dumps({"model": model, "temperature": temperature, "messages": messages}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Judge:
    """Asks the judge, or reads its earlier reply from ``cache_dir``."""

    def __init__(self, settings: JudgeSettings, cache_dir: Path):
        self.settings = settings
        self.cache_dir = Path(cache_dir)
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key or "none",
                                    max_retries=settings.max_retries, timeout=settings.timeout)
        self.asked = 0        # requests sent this run
        self.cached = 0       # replies read from the cache
        self.versions: set[str] = set()

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def ask(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """``{"content", "model"}`` of the judge's reply to ``messages``."""
        key = cache_key(self.settings.model, self.settings.temperature, messages)
        path = self._path(key)
        if path.is_file():
            try:
                reply = json.loads(path.read_text(encoding="utf-8"))
                self.cached += 1
                self.versions.add(reply["model"])
                return reply
            except (ValueError, KeyError):
                path.unlink()  # a damaged entry is asked again
        reply = self._request(messages)
        write_json_atomic(path, {**reply, "request": {"model": self.settings.model, "messages": messages,
                                                      "temperature": self.settings.temperature}})
        self.asked += 1
        self.versions.add(reply["model"])
        return reply

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        where = f"the judge at {self.settings.base_url}"
        try:
            completion = self.client.chat.completions.create(
                model=self.settings.model, messages=messages, temperature=self.settings.temperature)
        except openai.AuthenticationError as exc:
            raise UserError(f"{where} refused the key ({exc.status_code}); set the key's variable "
                            "(--judge-key-env, default OPENAI_API_KEY)") from None
        except openai.NotFoundError as exc:
            raise UserError(f"{where} does not know the model {self.settings.model!r} or the path "
                            f"/chat/completions ({exc.status_code}); check --judge-model and --judge-url "
                            "(it usually ends in /v1)") from None
        except openai.APIStatusError as exc:
            raise UserError(f"{where} answered HTTP {exc.status_code}: {str(exc)[:300]}") from None
        except openai.APIConnectionError as exc:
            raise UserError(f"{where} cannot be reached ({exc}); is it running? check --judge-url") from None
        if not completion.choices or completion.choices[0].message.content is None:
            raise UserError(f"{where} sent a reply without a message; is it an OpenAI-compatible chat endpoint?")
        return {"content": completion.choices[0].message.content,
                "model": completion.model or self.settings.model,
                "system_fingerprint": getattr(completion, "system_fingerprint", None)}


_PRED = re.compile(r"""['"]?pred['"]?\s*:\s*['"]?\s*(yes|no)""", re.IGNORECASE)
_SCORE = re.compile(r"""score['"]?\s*:\s*['"]?\s*(-?\d+(?:\.\d+)?)""", re.IGNORECASE)


def parse_verdict(content: str) -> dict[str, Any] | None:
    """The judge's Python-dict reply (``{'pred': 'yes', 'score': 4}``) as a dict, or None if unreadable.

    ``ast.literal_eval`` as the reference does; replies it cannot read (the prompt's own example,
    ``{''score': 4.8}``, is not valid Python) are read with a pattern for ``pred`` and ``score``.
    """
    start, end = content.find("{"), content.rfind("}")
    if start >= 0 and end > start:
        try:
            value = ast.literal_eval(content[start:end + 1])
            if isinstance(value, dict) and "score" in value:
                return {"pred": str(value["pred"]) if "pred" in value else None, "score": int(float(value["score"]))}
        except (ValueError, SyntaxError, TypeError):
            pass
    score = _SCORE.search(content)
    if score is None:
        return None
    pred = _PRED.search(content)
    return {"pred": pred.group(1).lower() if pred else None, "score": int(float(score.group(1)))}
