"""The locally built tiny models load back through from_pretrained, as user models do."""

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_round_trips_through_from_pretrained(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("Please be kind", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
