"""The instruction suffixes of LLaVA's evaluation files, which LLaMA-VID's evaluation reuses."""
from __future__ import annotations

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."
LETTER_ANSWER_CN = "\n请直接回答选项字母。"
VIZWIZ = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT_ANSWER
