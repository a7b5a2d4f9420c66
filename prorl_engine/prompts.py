"""The prompt format: how a question becomes the model's input, and its output the text a verifier judges.

Training, evaluation and the demo's fine-tuning all go through these, so the model sees one format.
"""

from __future__ import annotations


def format_prompt(tokenizer, prompt: str) -> str:
    """The model's chat template when its tokenizer has one, else the bare prompt and a newline."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt + "\n"


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The token ids of `format_prompt(prompt)`, with no special tokens added around them."""
    return tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def decode_response(tokenizer, token_ids: list[int]) -> str:
    """The text a verifier judges: the response without its closing eos (and any padding after it).

    Other tokens are kept, special or not. `skip_special_tokens=True` would also delete tokens a
    tokenizer happens to mark special that carry the answer (a tokenizer trained with `<answer>`
    as a special token, a `<think>` marker), so the verifier would judge text the model never wrote.
    """
    end = len(token_ids)
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    while end and token_ids[end - 1] in stop:
        end -= 1
    return tokenizer.decode(token_ids[:end], skip_special_tokens=False)
