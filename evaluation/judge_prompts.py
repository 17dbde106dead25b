"""The judge prompts of the paper's video evaluation, word for word from LLaMA-VID's scripts
(``llamavid/eval/eval_msvd_qa.py``, ``eval_activitynet_qa.py`` and ``evaluate_benchmark_{1..5}_*.py``,
themselves Video-ChatGPT's), so a judged score here means what the paper's means.

Kept as they are, quirks included: the missing spaces where the Python string pieces meet, the
``{''score': 4.8}`` example, and, in the consistency prompt, the first question given twice (the
reference passes ``Q1`` as both questions). Placeholders are ``{question}``-style names filled by
:func:`fill` in one pass, so text in an answer is never taken for a placeholder.
"""
from __future__ import annotations

import re

QA_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. "
    "Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer.")
QA_USER = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {pred}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. "
    "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', "
    "where value of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {'pred': 'yes', 'score': 4.8}.")

_SCORE_TAIL = (
    "Please generate the response in the form of a Python dictionary string with keys 'score', where its value "
    "is {what} in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {''score': 4.8}.")
_PAIR = ("Please evaluate the following video-based question-answer pair:\n\n"
         "Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {pred}\n\n")


def _score_user(name: str, level: str, value: str) -> str:
    return (_PAIR + f"Provide your evaluation only as a {name} score where the {name} score is an integer value "
            f"between 0 and 5, with 5 indicating the highest level of {level}. "
            + _SCORE_TAIL.replace("{what}", value))


def _system(what: str, task: str, instructions: list[str]) -> str:
    return (f"You are an intelligent chatbot designed for evaluating the {what} of generative outputs for "
            f"video-based question-answer pairs. {task} Here's how you can accomplish the task:"
            "------##INSTRUCTIONS: " + "\n".join(instructions))


VCG = {
    "correctness": (
        _system("factual accuracy", "Your task is to compare the predicted answer with the correct answer and "
                "determine if they are factually consistent.", [
                    "- Focus on the factual consistency between the predicted answer and the correct answer. The "
                    "predicted answer should not contain any misinterpretations or misinformation.",
                    "- The predicted answer must be factually accurate and align with the video content.",
                    "- Consider synonyms or paraphrases as valid matches.",
                    "- Evaluate the factual accuracy of the prediction compared to the answer."]),
        _score_user("factual accuracy", "factual consistency", "the factual accuracy score")),
    "detail": (
        _system("detail orientation", "Your task is to compare the predicted answer with the correct answer and "
                "determine its level of detail, considering both completeness and specificity.", [
                    "- Check if the predicted answer covers all major points from the video. The response should "
                    "not leave out any key aspects.",
                    "- Evaluate whether the predicted answer includes specific details rather than just generic "
                    "points. It should provide comprehensive information that is tied to specific elements of the "
                    "video.",
                    "- Consider synonyms or paraphrases as valid matches.",
                    "- Provide a single evaluation score that reflects the level of detail orientation of the "
                    "prediction, considering both completeness and specificity."]),
        _score_user("detail orientation", "detail orientation", "the detail orientation score")),
    "context": (
        _system("contextual understanding", "Your task is to compare the predicted answer with the correct answer "
                "and determine if the generated response aligns with the overall context of the video content.", [
                    "- Evaluate whether the predicted answer aligns with the overall context of the video content. "
                    "It should not provide information that is out of context or misaligned.",
                    "- The predicted answer must capture the main themes and sentiments of the video.",
                    "- Consider synonyms or paraphrases as valid matches.",
                    "- Provide your evaluation of the contextual understanding of the prediction compared to the "
                    "answer."]),
        _score_user("contextual understanding", "contextual understanding", "contextual understanding score")),
    "temporal": (
        _system("temporal understanding", "Your task is to compare the predicted answer with the correct answer "
                "and determine if they correctly reflect the temporal sequence of events in the video content.", [
                    "- Focus on the temporal consistency between the predicted answer and the correct answer. The "
                    "predicted answer should correctly reflect the sequence of events or details as they are "
                    "presented in the video content.",
                    "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is "
                    "maintained.",
                    "- Evaluate the temporal accuracy of the prediction compared to the answer."]),
        _score_user("temporal accuracy", "temporal consistency", "the temporal accuracy score")),
    "consistency": (
        "You are an intelligent chatbot designed for evaluating the consistency of generative outputs for similar "
        "video-based question-answer pairs. "
        "You will be given two very similar questions, a common answer common to both the questions and predicted "
        "answers for the two questions ."
        "Your task is to compare the predicted answers for two very similar question, with a common correct answer "
        "and determine if they are consistent. Here's how you can accomplish the task:"
        "------##INSTRUCTIONS: "
        "- Focus on the consistency between the two predicted answers and the correct answer. Both predicted answers "
        "should correspond to the correct answer and to each other, and should not contain any contradictions or "
        "significant differences in the conveyed information.\n"
        "- Both predicted answers must be consistent with each other and the correct answer, in terms of the "
        "information they provide about the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the "
        "conveyed information.\n"
        "- Evaluate the consistency of the two predicted answers compared to the correct answer.",
        "Please evaluate the following video-based question-answer pair:\n\n"
        "Question 1: {question1}\nQuestion 2: {question2}\nCorrect Answer: {answer}\n"
        "Predicted Answer to Question 1: {pred1}\nPredicted Answer to Question 2: {pred2}\n\n"
        "Provide your evaluation only as a consistency score where the consistency score is an integer value "
        "between 0 and 5, with 5 indicating the highest level of consistency. "
        + _SCORE_TAIL.replace("{what}", "the consistency score")),
}

_PLACEHOLDER = re.compile(r"\{(question1|question2|question|answer|pred1|pred2|pred)\}")


def fill(template: str, **values: str) -> str:
    """The template with its ``{name}`` placeholders replaced in one pass."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def messages(system: str, user: str, **values: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": fill(user, **values)}]


def qa_messages(question: str, answer: str, pred: str) -> list[dict[str, str]]:
    """MSVD-QA, MSRVTT-QA and ActivityNet-QA: yes/no and a 0-5 score."""
    return messages(QA_SYSTEM, QA_USER, question=question, answer=answer, pred=pred)


def templates() -> dict[str, dict[str, str]]:
    """Every prompt, for the results file."""
    out = {"qa": {"system": QA_SYSTEM, "user": QA_USER}}
    out.update({name: {"system": system, "user": user} for name, (system, user) in VCG.items()})
    return out
