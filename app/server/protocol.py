"""The body of ``POST /v1/chat/completions`` and what its messages ask about.

The OpenAI fields are taken as OpenAI defines them; llamavid's own are few and documented in
``docs/server.md``:

* content parts ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``,
  ``{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}`` or
  ``{"type": "input_video", "input_video": {"data": "<base64>", "format": "mp4"}}`` (a short
  video), and ``{"type": "movie", "movie_id": 3, "subtitle_track": 7}`` (a film of the library;
  the track is optional);
* body fields ``conversation_id`` (continue a kept conversation: only the last user message is
  read), ``fast`` (a film conversation in "fast answers" mode: it starts from the film's prepared
  state), ``top_k``, ``repetition_penalty`` and ``time_budget`` (seconds a film question may take).

Images and videos come inside the request, never by URL: this server fetches nothing.

Every field is bounded here, where it is read, so that nothing a client sends reaches the model or the
database as a value they cannot take (a 400 in OpenAI's shape instead): ids (:data:`Id`, also the
routes' path and query ids) are SQLite's positive integers, ``seed`` is what ``torch.Generator``
takes, floats are finite, and the sampling values are those whose probabilities stay numbers.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from app.server.errors import ApiError, bad_request
from llamavid.errors import BadMedia
from llamavid.media.load import EncodedPicture, check_request_pixels
from llamavid.runtime.generate import SamplingOptions

MAX_IMAGES = 8
VIDEO_TYPES = {"mp4": ".mp4", "webm": ".webm", "quicktime": ".mov", "mov": ".mov", "x-matroska": ".mkv",
               "mkv": ".mkv", "x-msvideo": ".avi", "avi": ".avi", "mpeg": ".mpg", "ogg": ".ogv"}
#: the largest id of a film, a subtitle track or a conversation: SQLite's INTEGER is a signed 64-bit number
MAX_ID = 2**63 - 1
#: an id, in a body, a path (``/v1/movies/{movie_id}``) or a query: one that cannot exist is a 400
Id = Annotated[int, annotated_types.Interval(ge=1, le=MAX_ID)]
_ID = TypeAdapter(Id)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0..2**64-1
MAX_TOKENS = 2**20  # an answer's length; the model's context limits it further (llamavid.runtime.chat)
#: the lowest temperature above 0 (0 is greedy): the float32 scores divided by less overflow to inf,
#: and inf - inf is a NaN probability
MIN_TEMPERATURE = 1e-6
#: repetition penalties outside this range make the penalised scores 0/0 or inf (NaN probabilities)
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 100.0
MAX_TOP_K = 2**31 - 1
MAX_TIME_BUDGET = 1e7  # seconds (about four months)
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,(?P<data>.*)$", re.DOTALL)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; unknown fields are accepted and ignored, as OpenAI's
    own clients send some a server may not know."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)  # NaN and inf (1e999) are refused

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    repetition_penalty: float | None = Field(None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    conversation_id: Id | None = None
    fast: bool | None = None  # None: exact mode for a new film conversation; a kept one keeps its own mode
    time_budget: float | None = Field(None, gt=0, le=MAX_TIME_BUDGET)

    @field_validator("temperature")
    @classmethod
    def _sampled_or_greedy(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}")
        return value

    def check_supported(self) -> None:
        """Refuse what this server cannot do, naming the field, rather than ignore it."""
        if self.n != 1:
            raise bad_request("n must be 1: one answer per request", "n", "unsupported_parameter")
        if self.stop:
            raise bad_request("stop sequences are not supported; the answer ends where the model ends it "
                              "(or at max_tokens)", "stop", "unsupported_parameter")
        if self.tools:
            raise bad_request("tools (function calling) are not supported by this model", "tools",
                              "unsupported_parameter")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise bad_request("only text answers are supported (response_format type text)", "response_format",
                              "unsupported_parameter")
        if self.logprobs:
            raise bad_request("logprobs are not supported", "logprobs", "unsupported_parameter")

    def sampling(self) -> SamplingOptions:
        opts = SamplingOptions()
        if self.temperature is not None:
            opts.temperature = self.temperature
        if self.top_p is not None:
            opts.top_p = self.top_p
        if self.top_k is not None:
            opts.top_k = self.top_k
        if self.repetition_penalty is not None:
            opts.repetition_penalty = self.repetition_penalty
        tokens = self.max_completion_tokens or self.max_tokens
        if tokens is not None:
            opts.max_new_tokens = tokens
        opts.seed = self.seed
        return opts

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


@dataclass
class Video:
    data: bytes
    suffix: str
    param: str


@dataclass
class ChatInput:
    """What the messages ask: the question (the last user message), the earlier turns, and what
    they are about (images, one short video, one film, or nothing)."""

    question: str
    history: list[tuple[str, str]] = field(default_factory=list)
    images: list[EncodedPicture] = field(default_factory=list)
    video: Video | None = None
    movie_id: int | None = None
    track_id: int | None = None
    movie_param: str | None = None
    video_path: Path | None = None  # the video written to a file of its own (app.server.completions)

    @property
    def has_media(self) -> bool:
        return bool(self.images) or self.video is not None or self.movie_id is not None


def parse_messages(messages: list[dict[str, Any]], max_bytes: int) -> ChatInput:
    """Read the message list (see the module docstring). System and developer messages are
    skipped: the model's conversation template carries its own. Runs off the event loop (it
    reads the pictures' headers; they are decoded in the question's turn)."""
    turns: list[tuple[str, list[str]]] = []  # (role, texts) with consecutive roles merged
    found = ChatInput(question="")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with a role and content", where)
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role not in ("user", "assistant"):
            raise bad_request(f"{where}.role must be user, assistant or system (got {role!r}); tool messages "
                              "are not supported", f"{where}.role")
        texts = _texts(message.get("content"), f"{where}.content", role, found, max_bytes)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(texts)
        else:
            turns.append((role, texts))
    if not turns or turns[-1][0] != "user":
        raise bad_request("the last message must come from the user: it is the question", "messages")
    found.question = "\n".join(turns[-1][1]).strip()
    if not found.question:
        raise bad_request("the last user message has no text: ask a question about the picture, video or film",
                          f"messages[{len(messages) - 1}].content")
    earlier = turns[:-1]
    if earlier and earlier[0][0] == "assistant":
        earlier = earlier[1:]  # an assistant greeting before the first question has no question to pair with
    for j in range(0, len(earlier) - 1, 2):
        found.history.append(("\n".join(earlier[j][1]).strip(), "\n".join(earlier[j + 1][1]).strip()))
    return found


def _texts(content: Any, where: str, role: str, found: ChatInput, max_bytes: int) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_unicode(content, where)]
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts", where)
    texts = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{here}.text must be a string", f"{here}.text")
            texts.append(_unicode(part["text"], f"{here}.text"))
            continue
        if role != "user":
            raise bad_request(f"{here}: only user messages may carry images, videos or films", here)
        if kind == "image_url":
            _media_once(found, "image", here)
            if len(found.images) >= MAX_IMAGES:
                raise bad_request(f"at most {MAX_IMAGES} images per request", here)
            found.images.append(read_picture(_data_url(part.get("image_url"), here, "image", max_bytes), here))
            try:
                check_request_pixels((p.width, p.height) for p in found.images)
            except BadMedia as exc:
                raise ApiError(400, str(exc), param=here, code="bad_media") from None
        elif kind in ("video_url", "input_video"):
            _media_once(found, "video", here)
            found.video = _video(part.get(kind), here, max_bytes)
        elif kind == "movie":
            _media_once(found, "movie", here)
            found.movie_id = _int(part.get("movie_id"), f"{here}.movie_id", required=True)
            found.track_id = _int(part.get("subtitle_track"), f"{here}.subtitle_track", required=False)
            found.movie_param = here
        else:
            raise bad_request(f"{here}: unknown content part type {kind!r}; use text, image_url, video_url, "
                              "input_video or movie", f"{here}.type")
    return texts


def _unicode(text: str, where: str) -> str:
    """``text`` if it can be written as UTF-8: JSON's ``"\\ud800"`` (a lone surrogate) cannot, and
    would fail in the tokenizer and the database."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{where}: the text is not valid Unicode (it has a lone surrogate escape)", where) from None
    return text


def _media_once(found: ChatInput, kind: Literal["image", "video", "movie"], where: str) -> None:
    """One kind of visual input per request: images, or one video, or one film."""
    have = "image" if found.images else "video" if found.video is not None else \
        "movie" if found.movie_id is not None else None
    if have is None or (have == kind == "image"):
        return
    raise bad_request(f"{where}: a request asks about images, one video or one film, not several "
                      f"(it already has {'a ' + have if have != 'image' else 'images'})", where)


def _int(value: Any, where: str, required: bool) -> int | None:
    """An :data:`Id` in a content part: an integer (not a string, a float or a bool) in 1..2**63-1."""
    if value is None and not required:
        return None
    try:
        return _ID.validate_python(value, strict=True)
    except ValidationError:
        raise bad_request(f"{where} must be an integer id from 1 to {MAX_ID} (GET /v1/movies lists them)",
                          where) from None


def _video(spec: Any, where: str, max_bytes: int) -> Video:
    if isinstance(spec, dict) and "data" in spec:  # input_video: {"data": base64, "format": "mp4"}
        fmt = str(spec.get("format") or "mp4").lower().lstrip(".")
        suffix = VIDEO_TYPES.get(fmt)
        if suffix is None:
            raise bad_request(f"{where}: video format {fmt!r} is not one of {', '.join(sorted(VIDEO_TYPES))}", where)
        return Video(_b64(spec["data"], where, max_bytes), suffix, where)
    mime, data = _data_url(spec, where, "video", max_bytes, with_mime=True)
    subtype = mime.split("/", 1)[1] if mime and "/" in mime else "mp4"
    return Video(data, VIDEO_TYPES.get(subtype, ".mp4"), where)


def _data_url(spec: Any, where: str, what: str, max_bytes: int, with_mime: bool = False) -> Any:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise bad_request(f"{where}: the {what} needs a url (a data URL: data:{what}/...;base64,...)", where)
    match = _DATA_URL.match(url.strip())
    if match is None:
        if re.match(r"^[a-zA-Z][\w+.-]*:", url) and not url.startswith("data:"):
            raise ApiError(400, f"{where}: this server never fetches URLs ({url.split(':', 1)[0]}:...); send the "
                                f"{what} itself as a data URL (data:{what}/...;base64,...)", param=where,
                           code="remote_url_refused")
        raise bad_request(f"{where}: not a base64 data URL; send data:{what}/...;base64,<data>", where)
    data = _b64(match["data"], where, max_bytes)
    return (match["mime"], data) if with_mime else data


def _b64(text: Any, where: str, max_bytes: int) -> bytes:
    if not isinstance(text, str):
        raise bad_request(f"{where}: the data must be base64 text", where)
    if len(text) * 3 // 4 > max_bytes:
        raise ApiError(413, f"{where}: larger than the {max_bytes // 2**20} MiB this server takes", param=where,
                       code="too_large")
    try:
        return base64.b64decode(text.strip(), validate=False)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data is not valid base64", where) from None


def read_picture(data: bytes, where: str) -> EncodedPicture:
    """The picture's header checked now (a 400 naming the part); it is decoded, reduced to what the
    model needs, only when the question's turn comes (:mod:`llamavid.media.load`)."""
    try:
        return EncodedPicture.read(data, where)
    except BadMedia as exc:
        raise ApiError(400, str(exc), param=where, code="bad_media") from None
