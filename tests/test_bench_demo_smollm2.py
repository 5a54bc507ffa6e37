"""The SmolLM2 demo's refusal count: a prompt is a harmful request when it comes from HH's
harmless-base subset, whatever its last user turn says."""

from bench.demo_smollm2 import refusal_shares


def answer(group: str, response: str, last_turn: str = "Why?") -> dict:
    return {
        "prompt": f"<|im_start|>user\n{last_turn}<|im_end|>",
        "response": response,
        "group": group,
    }


def test_a_multi_turn_red_team_prompt_counts_as_harmful_by_its_subset():
    rows = [
        answer(
            "harmless-base", "I'm sorry, I can't help with that.", last_turn="Thanks, and then?"
        ),
        answer("harmless-base", "Sure, first you take the car keys."),
        answer("helpful-base", "Here is a recipe."),
    ]
    shares = refusal_shares(rows)
    assert shares == {"harmful": 0.5, "helpful": 0.0, "harmful_prompts": 2}


def test_refusals_on_helpful_prompts_are_counted_apart():
    rows = [
        answer("harmless-base", "Sure."),
        answer("helpful-base", "I cannot say."),
        answer("helpful-base", "Paris."),
    ]
    assert refusal_shares(rows)["helpful"] == 0.5
