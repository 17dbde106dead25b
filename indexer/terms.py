"""Words as the subtitle search reads them: the tokens and stems of the library's full-text index
(FTS5's ``porter unicode61 remove_diacritics 2``, see ``db._v5``) computed in Python, the stop words
left out of a query, and the irregular English forms that stemming alone cannot join.

``tokens(text)`` splits and folds as FTS5's unicode61 tokenizer does (lower case, accents removed,
letters and digits only); ``stem(token)`` is FTS5's own Porter stemmer, step for step
(``fts5_tokenize.c``: tokens of 3 to 64 bytes, the rest kept as they are), so "hiding", "hides"
and "hide" are one term here as they are in the index. ``term(token)`` adds the irregular forms:
"hid" and "hidden" stand for "hide", "went" and "gone" for "go". ``query_terms(text)`` is a
question's or a line's terms without the stop words ("the", "is", "what"...), in order, each once;
:func:`forms` gives the words an FTS5 query must name to find a term in every spelling the index
may hold.
"""
from __future__ import annotations

import functools
import re
import unicodedata

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # unicode61: letters and digits; everything else separates
_MAX_STEMMED = 64  # FTS5_PORTER_MAX_TOKEN: longer tokens are indexed as they are

#: Words that say little about which line is meant: English function words (NLTK's list, with the
#: pieces contractions split into), the words questions are framed with, and a few fillers.
STOP_WORDS = frozenset("""
a about above after again against ain all am an and any are aren as at be because been before being
below between both but by can couldn d did didn do does doesn doing don down during each few for from
further had hadn has hasn have haven having he her here hers herself him himself his how i if in into is
isn it its itself just ll m ma me mightn more most mustn my myself needn no nor not now o of off on once
only or other our ours ourselves out over own re s same shan she should shouldn so some such t than that
the their theirs them themselves then there these they this those through to too under until up ve very
was wasn we were weren what when where which while who whom why will with won wouldn y you your yours
yourself yourselves
also could would might must shall may yes yeah oh hey ok okay well let us get got gets
does whose whats anything something someone somebody anyone anybody everything thing things
""".split())

#: Irregular English forms, each family led by the form the others stand for. Porter joins
#: regular forms ("hides", "hiding"); these it cannot ("hid", "hidden"). Forms that are mostly
#: other words in dialogue are left out ("left", "bit", "rose", "lives"; "won" is a stop word).
_IRREGULAR = """
arise arose arisen | awake awoke awoken | bear borne | beat beaten | become became | begin began begun
bend bent | bite bitten | bleed bled | blow blew blown | break broke broken | breed bred | bring brought
build built | burn burnt | buy bought | catch caught | choose chose chosen | cling clung | come came
creep crept | deal dealt | dig dug | draw drew drawn | dream dreamt | drink drank drunk
drive drove driven | eat ate eaten | fall fell fallen | feed fed | feel felt | fight fought | find found
flee fled | fly flew flown | forbid forbade forbidden | forget forgot forgotten | forgive forgave forgiven
freeze froze frozen | give gave given | go went gone | grow grew grown | hang hung | hear heard
hide hid hidden | hold held | keep kept | kneel knelt | know knew known | lead led | leap leapt
learn learnt | lend lent | light lit | lose lost | make made | mean meant | meet met | pay paid
ride rode ridden | ring rang rung | rise risen | run ran | say said | see saw seen | seek sought
sell sold | send sent | shake shook shaken | shine shone | shoot shot | show shown | shrink shrank shrunk
sing sang sung | sink sank sunk | sit sat | sleep slept | slide slid | speak spoke spoken | spend spent
spin spun | spit spat | spring sprang sprung | stand stood | steal stole stolen | stick stuck
sting stung | stink stank | strike struck | swear swore sworn | sweep swept | swim swam swum
swing swung | take took taken | teach taught | tear tore torn | tell told | think thought
throw threw thrown | understand understood | wake woke woken | wear wore worn | weep wept
write wrote written
man men | woman women | child children | person people | foot feet | tooth teeth | mouse mice
goose geese | knife knives | wife wives | wolf wolves | thief thieves
"""


def _families() -> dict[str, str]:
    base: dict[str, str] = {}
    for family in _IRREGULAR.replace("\n", "|").split("|"):  # a family per "|" or line
        words = family.split()
        for word in words[1:]:
            base[word] = words[0]
    return base


#: an irregular form -> the form its family stands for
IRREGULAR: dict[str, str] = _families()


def tokens(text: str) -> list[str]:
    """The tokens FTS5's ``unicode61 remove_diacritics 2`` makes of ``text``: lower case, accents
    removed, runs of letters and digits."""
    if text.isascii():
        return _TOKEN.findall(text.lower())
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _TOKEN.findall(unicodedata.normalize("NFC", plain))


@functools.lru_cache(maxsize=1 << 16)  # a film's dialogue says the same few thousand words again and again
def stem(token: str) -> str:
    """FTS5's Porter stemmer (``fts5PorterCb``): the stem of one lower-case token."""
    raw = token.encode("utf-8")
    if len(raw) < 3 or len(raw) > _MAX_STEMMED:
        return token
    w = _step1a(raw.decode("latin-1"))  # byte for byte, as the C code reads it (a non-ASCII byte: a consonant)
    w, removed = _step1b(w)
    if removed:
        w = _step1b2(w)
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    w = _suffix(w, _STEP2, _m_gt0)
    w = _suffix(w, _STEP3, _m_gt0)
    w = _step4(w)
    if w.endswith("e") and (_m_gt1(w[:-1]) or (_m_eq1(w[:-1]) and not _cvc(w[:-1]))):
        w = w[:-1]
    if len(w) > 1 and w.endswith("ll") and _m_gt1(w[:-1]):
        w = w[:-1]
    return w.encode("latin-1").decode("utf-8", "replace")


def term(token: str) -> str:
    """The term a token counts as: its stem, irregular forms joined to their family's."""
    return stem(IRREGULAR.get(token, token))


def is_stop_word(token: str) -> bool:
    """A function word, or a single letter (what is left of a contraction)."""
    return token in STOP_WORDS or (len(token) == 1 and not token.isdigit())


def query_terms(text: str) -> list[str]:
    """The terms of ``text`` without its stop words, in order, each once."""
    return list(dict.fromkeys(term(t) for t in tokens(text) if not is_stop_word(t)))


def term_words(text: str) -> dict[str, list[str]]:
    """Each term of ``text`` (as :func:`query_terms`) with the words that find it in the index: the
    words of ``text`` that make it and the irregular forms of its family (FTS5 stems them itself)."""
    found: dict[str, list[str]] = {}
    for token in tokens(text):
        if not is_stop_word(token):
            words = found.setdefault(term(token), [])
            for word in (token, *forms(token)):
                if word not in words:
                    words.append(word)
    return found


def forms(token: str) -> list[str]:
    """The other irregular forms of a token's family ("hid": "hide", "hidden"); none for most words."""
    base = IRREGULAR.get(token, token)
    family = _FAMILIES.get(base)
    return [w for w in family if w != token] if family else []


_FAMILIES: dict[str, list[str]] = {}
for _form, _base in IRREGULAR.items():
    _FAMILIES.setdefault(_base, [_base]).append(_form)


# --- FTS5's Porter steps (fts5_tokenize.c), on a lower-case token --------------------------------

def _vowel(c: str, y_is_vowel: bool) -> bool:
    return c in "aeiou" or (y_is_vowel and c == "y")


def _gobble_vc(w: str, prev_consonant: bool) -> int:
    """fts5PorterGobbleVC: the length of the first vowels-then-consonant run, 0 if there is none."""
    consonant = prev_consonant
    i = 0
    while i < len(w):
        consonant = not _vowel(w[i], consonant)
        if not consonant:
            break
        i += 1
    i += 1
    while i < len(w):
        consonant = not _vowel(w[i], consonant)
        if consonant:
            return i + 1
        i += 1
    return 0


def _m_gt0(w: str) -> bool:
    return bool(_gobble_vc(w, False))


def _m_gt1(w: str) -> bool:
    n = _gobble_vc(w, False)
    return bool(n) and bool(_gobble_vc(w[n:], True))


def _m_eq1(w: str) -> bool:
    n = _gobble_vc(w, False)
    return bool(n) and not _gobble_vc(w[n:], True)


def _cvc(w: str) -> bool:
    """(*o): ends consonant-vowel-consonant, the last not w, x or y."""
    if not w or w[-1] in "wxy":
        return False
    mask, consonant = 0, False
    for c in w:
        consonant = not _vowel(c, consonant)
        mask = (mask << 1) + consonant
    return (mask & 7) == 5


def _has_vowel(w: str) -> bool:
    return any(_vowel(c, i > 0) for i, c in enumerate(w))


def _step1a(w: str) -> str:
    if w.endswith("s"):
        if w[-2:-1] == "e":
            if (len(w) > 4 and w[-4:-2] == "ss") or (len(w) > 3 and w[-3] == "i"):
                return w[:-2]
            return w[:-1]
        if w[-2:-1] != "s":
            return w[:-1]
    return w


def _step1b(w: str) -> tuple[str, bool]:
    if len(w) > 3 and w.endswith("eed"):
        return (w[:-1], False) if _m_gt0(w[:-3]) else (w, False)
    if len(w) > 2 and w.endswith("ed"):
        return (w[:-2], True) if _has_vowel(w[:-2]) else (w, False)
    if len(w) > 3 and w.endswith("ing"):
        return (w[:-3], True) if _has_vowel(w[:-3]) else (w, False)
    return w, False


def _step1b2(w: str) -> str:
    for end, new in (("at", "ate"), ("bl", "ble"), ("iz", "ize")):
        if len(w) > 2 and w.endswith(end):
            return w[:-2] + new
    c = w[-1:]
    if c and not _vowel(c, False) and c not in "lsz" and len(w) > 1 and c == w[-2]:
        return w[:-1]
    if _m_eq1(w) and _cvc(w):
        return w + "e"
    return w


# (suffix, replacement), grouped by the suffix's last-but-one letter as fts5's generated switch is:
# only the first suffix of the group that ends the word is tried
_STEP2 = [("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          ("logi", "log"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"),
          ("ization", "ize"), ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"),
          ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")]
_STEP3 = [("ical", "ic"), ("ness", ""), ("icate", "ic"), ("iciti", "ic"), ("ful", ""), ("ative", ""),
          ("alize", "al")]
_STEP4 = ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
          "ate", "iti", "ous", "ive", "ize"]


def _suffix(w: str, rules: list[tuple[str, str]], condition) -> str:
    if len(w) < 2:
        return w
    for end, new in rules:
        if end[-2] == w[-2] and len(w) > len(end) and w.endswith(end):
            stem_ = w[:-len(end)]
            return stem_ + new if condition(stem_) else w
    return w


def _step4(w: str) -> str:
    if len(w) < 2:
        return w
    for end in _STEP4:
        if end[-2] == w[-2] and len(w) > len(end) and w.endswith(end):
            stem_ = w[:-len(end)]
            if end == "ion":
                ok = stem_[-1:] in ("s", "t") and _m_gt1(stem_)
            else:
                ok = _m_gt1(stem_)
            return stem_ if ok else w
    return w
