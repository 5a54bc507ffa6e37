"""Batched decoding: what `generate_responses` promises about order, padding, seeds and EOS."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import ONE_PASS_EACH
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from alol.data.batching import length_sorted_batches
from alol.data.tokenize import TokenizedPair
from alol.distributed import shard_indices
from alol.models import generate as generate_module
from alol.models.generate import (
    Answer,
    GenerationConfig,
    decode_response,
    generate_answers,
    generate_responses,
)
from alol.models.reference import sequence_logprobs_of_pairs

PROMPTS = [
    "Human: How do I bake bread? Assistant:",
    "Hi",
    "The quick brown fox jumps over the lazy dog and then",
    "Please be kind",
    "Numbers like 1 2 3",
]

GREEDY = GenerationConfig(max_new_tokens=8, batch_size=1)


def manual_greedy_ids(
    model, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int
) -> list[int]:
    """The textbook greedy loop: full forward pass, argmax of the last position, stop at EOS."""
    ids = list(prompt_ids)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if next_id == eos_token_id:
                break
            ids.append(next_id)
            new.append(next_id)
    return new


def test_greedy_decoding_equals_a_manual_greedy_loop(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    prompt = PROMPTS[0]
    ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expected_ids = manual_greedy_ids(
        tiny_model, ids, GREEDY.max_new_tokens, tiny_tokenizer.eos_token_id
    )

    [[response]] = generate_responses(
        tiny_model, tiny_tokenizer, [prompt], GREEDY, show_progress=False
    )

    assert expected_ids, (
        "the manual loop should produce tokens for this comparison to mean anything"
    )
    assert response == tiny_tokenizer.decode(expected_ids, skip_special_tokens=True)


def test_greedy_decoding_is_deterministic(tiny_model, tiny_tokenizer):
    first = generate_responses(tiny_model, tiny_tokenizer, PROMPTS, GREEDY, show_progress=False)
    second = generate_responses(tiny_model, tiny_tokenizer, PROMPTS, GREEDY, show_progress=False)
    assert first == second


def test_left_padded_batches_match_one_by_one_decoding_in_prompt_order(tiny_model, tiny_tokenizer):
    """Batches are formed longest-first; the answers must still come back in the prompts' order."""
    one_by_one = [
        generate_responses(tiny_model, tiny_tokenizer, [prompt], GREEDY, show_progress=False)[0]
        for prompt in PROMPTS
    ]
    batched = generate_responses(
        tiny_model,
        tiny_tokenizer,
        PROMPTS,
        GenerationConfig(max_new_tokens=8, batch_size=3),
        show_progress=False,
    )
    assert batched == one_by_one


def test_decoding_uses_eval_mode_and_restores_training_mode(tiny_model, tiny_tokenizer):
    """With dropout left on, greedy outputs would vary; the caller's train mode comes back after.
    Every dropout of the model is set to 0.5 first (Llama's default is 0), and a forward in
    train mode is checked to differ from run to run, so the test sees dropout at work."""
    for module in tiny_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    ids = tiny_tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    tiny_model.train()
    assert not torch.equal(tiny_model(ids).logits, tiny_model(ids).logits), "dropout is active"
    tiny_model.eval()
    expected = generate_responses(tiny_model, tiny_tokenizer, PROMPTS, GREEDY, show_progress=False)
    tiny_model.train()
    assert (
        generate_responses(tiny_model, tiny_tokenizer, PROMPTS, GREEDY, show_progress=False)
        == expected
    )
    assert tiny_model.training


def test_sampling_with_a_seed_repeats_and_leaves_the_global_rng_alone(
    tiny_llama_dir, tiny_tokenizer
):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95, seed=7)
    rng_before = torch.get_rng_state()

    first = generate_responses(model, tiny_tokenizer, PROMPTS, config, show_progress=False)
    second = generate_responses(model, tiny_tokenizer, PROMPTS, config, show_progress=False)
    other_seed = generate_responses(
        model,
        tiny_tokenizer,
        PROMPTS,
        GenerationConfig(**{**vars(config), "seed": 8}),
        show_progress=False,
    )

    assert first == second
    assert first != other_seed
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_k_sampled_responses_per_prompt(tiny_llama_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = GenerationConfig(
        max_new_tokens=6, do_sample=True, num_return_sequences=3, batch_size=2
    )

    responses = generate_responses(model, tiny_tokenizer, PROMPTS, config, show_progress=False)

    assert [len(samples) for samples in responses] == [3] * len(PROMPTS)
    assert all(len(set(samples)) > 1 for samples in responses), (
        "k samples of a random model should differ"
    )


def test_response_stops_at_the_first_eos_even_when_batch_mates_continue(
    tiny_llama_dir, tiny_tokenizer
):
    """Swap the LM-head rows of EOS and the 3rd greedy token t3: the model now says EOS where it said t3.

    Greedy output before: t1 t2 t3 ...; after the swap: t1 t2 EOS, so the response is t1 t2.
    (Llama's head is untied, so the input embeddings, and hence steps 1-2, are unchanged.)
    """
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    eos = tiny_tokenizer.eos_token_id
    prompt = PROMPTS[0]
    ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t1, t2, t3 = manual_greedy_ids(model, ids, 3, eos)
    assert len({t1, t2, t3, eos}) == 4, "the swap argument needs four distinct tokens"
    with torch.no_grad():
        head = model.lm_head.weight
        head[[t3, eos]] = head[[eos, t3]].clone()

    answers = generate_answers(
        model,
        tiny_tokenizer,
        [prompt, PROMPTS[2]],
        GenerationConfig(max_new_tokens=8, batch_size=2),
        show_progress=False,
    )

    assert answers[0] == [Answer(tiny_tokenizer.decode([t1, t2]), True, (t1, t2, eos))]
    assert generate_responses(
        model, tiny_tokenizer, [prompt], GenerationConfig(max_new_tokens=8), show_progress=False
    ) == [[tiny_tokenizer.decode([t1, t2])]]


def test_answers_that_end_leave_the_batch_and_no_answer_changes(
    tiny_llama_dir, tiny_tokenizer, monkeypatch
):
    """Chunks of 2 new tokens; EOS takes the place of t, the 6th greedy token of the first
    prompt, so the prompts end in different chunks or not at all. Each answer is still the
    textbook greedy loop's, one prompt at a time, while the batch shrinks as answers end."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    eos = tiny_tokenizer.eos_token_id
    prompt_ids = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    t = manual_greedy_ids(model, prompt_ids[0], 6, eos)[5]
    with torch.no_grad():
        model.lm_head.weight[[t, eos]] = model.lm_head.weight[[eos, t]].clone()
    expected = [manual_greedy_ids(model, ids, 12, eos) for ids in prompt_ids]
    assert len({len(ids) for ids in expected}) >= 3, "the prompts should end at different steps"
    rows_per_call = []
    generate = model.generate
    monkeypatch.setattr(
        model,
        "generate",
        lambda **kwargs: rows_per_call.append(len(kwargs["input_ids"])) or generate(**kwargs),
    )

    answers = generate_answers(
        model,
        tiny_tokenizer,
        PROMPTS,
        GenerationConfig(max_new_tokens=12, batch_size=5, chunk_tokens=2),
        False,
    )

    assert [(a.text, a.finished) for (a,) in answers] == [
        (tiny_tokenizer.decode(ids), len(ids) < 12) for ids in expected
    ]
    assert rows_per_call == sorted(rows_per_call, reverse=True)
    assert rows_per_call[0] == 5 > rows_per_call[-1]


def test_a_stage_of_greedy_answers_stays_up_to_date_when_only_the_chunk_size_changes():
    """Stages that keep answers are fingerprinted by the settings that decide them: greedy
    answers are the same in any chunks (above), sampled ones are not."""
    greedy, sampled = GenerationConfig(do_sample=False), GenerationConfig(do_sample=True)
    assert replace(greedy, chunk_tokens=4).deciding_settings() == greedy.deciding_settings()
    assert replace(sampled, chunk_tokens=4).deciding_settings() != sampled.deciding_settings()
    assert replace(greedy, max_new_tokens=7).deciding_settings() != greedy.deciding_settings()


def static_cache(model, monkeypatch) -> None:
    model.generation_config.cache_implementation = "static"


def zero3_over_two_processes(model, monkeypatch) -> None:
    monkeypatch.setattr(generate_module, "is_deepspeed_zero3_enabled", lambda: True)
    monkeypatch.setattr(generate_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(generate_module.dist, "get_world_size", lambda: 2)
    # The other process has as many batches: no filler batch to decode.
    monkeypatch.setattr(generate_module.dist, "all_reduce", lambda tensor, op: None)


def test_where_weights_are_sharded_a_process_with_fewer_batches_decodes_fillers_to_match(
    tiny_llama_dir, tiny_tokenizer, monkeypatch
):
    """Every process must call generate as often as the busiest (each step gathers the sharded
    weights from all): one prompt's batch here, three on the other process, so two fillers,
    whose answers are dropped."""
    model = model_whose_first_answer_ends_early(tiny_llama_dir, tiny_tokenizer)
    config = GenerationConfig(max_new_tokens=4, batch_size=1)
    alone = generate_answers(model, tiny_tokenizer, PROMPTS[:1], config, False)
    zero3_over_two_processes(model, monkeypatch)

    def busiest_has_three(tensor, op):
        tensor.fill_(max(int(tensor), 3))

    monkeypatch.setattr(generate_module.dist, "all_reduce", busiest_has_three)
    calls = []
    decode = generate_module.decode_until_all_end
    monkeypatch.setattr(
        generate_module,
        "decode_until_all_end",
        lambda model, input_ids, *rest: (
            calls.append(len(input_ids)) or decode(model, input_ids, *rest)
        ),
    )

    answers = generate_answers(model, tiny_tokenizer, PROMPTS[:1], config, False)

    assert len(calls) == 3
    assert answers == alone


@pytest.mark.parametrize("setting", [static_cache, zero3_over_two_processes])
def test_a_model_whose_rows_cannot_leave_the_batch_decodes_in_one_call(
    setting, tiny_llama_dir, tiny_tokenizer, monkeypatch
):
    """A static cache is laid out for the batch it was made for; with weights sharded over
    processes, every process must keep stepping until all are done."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    in_chunks = replace(GREEDY, chunk_tokens=2)
    expected = generate_responses(model, tiny_tokenizer, PROMPTS, in_chunks, show_progress=False)
    setting(model, monkeypatch)
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw) or generate(**kw))

    responses = generate_responses(model, tiny_tokenizer, PROMPTS, in_chunks, show_progress=False)

    assert responses == expected
    assert len(calls) == len(PROMPTS)  # one per batch of one prompt


def forward_pass_logps(model, tokenizer, prompted_answers) -> list[float]:
    """log π(y|x) of each (prompt, answer)'s tokens from one teacher-forced pass over both."""
    pairs = [
        TokenizedPair(tokenizer(p, add_special_tokens=False)["input_ids"], list(a.token_ids))
        for p, a in prompted_answers
    ]
    return sequence_logprobs_of_pairs(model, pairs, ONE_PASS_EACH)


def model_whose_first_answer_ends_early(tiny_llama_dir, tokenizer):
    """The tiny Llama with EOS in place of the 4th greedy token of the first prompt's answer."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    eos = tokenizer.eos_token_id
    first_ids = tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    t = manual_greedy_ids(model, first_ids, 4, eos)[3]
    with torch.no_grad():
        model.lm_head.weight[[t, eos]] = model.lm_head.weight[[eos, t]].clone()
    return model


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_new_tokens=12, batch_size=5, chunk_tokens=3),  # rows leave
        GenerationConfig(max_new_tokens=12, batch_size=2, chunk_tokens=12),  # one chunk
        GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.5, top_p=0.9),
        GenerationConfig(max_new_tokens=9, do_sample=True, num_return_sequences=3, chunk_tokens=4),
    ],
    ids=["greedy in chunks", "greedy in one chunk", "sampled at temperature 0.5", "3 samples each"],
)
def test_an_answers_log_prob_from_decoding_is_the_forward_pass_one(
    config, tiny_llama_dir, tiny_tokenizer
):
    """What an evaluation weighs a model's own answers by, with no second pass over them: the
    sum over the answer's tokens (EOS included, the padding after it not) of the model's
    log-probs at temperature 1, whatever the sampling settings, as a teacher-forced pass
    gives them."""
    model = model_whose_first_answer_ends_early(tiny_llama_dir, tiny_tokenizer)

    answers = generate_answers(model, tiny_tokenizer, PROMPTS, config, False, with_logps=True)

    if not config.do_sample:
        assert answers[0][0].finished and len(answers[0][0].token_ids) == 4
    prompted = [(p, a) for p, samples in zip(PROMPTS, answers, strict=True) for a in samples]
    assert len(prompted) == len(PROMPTS) * config.num_return_sequences
    expected = forward_pass_logps(model, tiny_tokenizer, prompted)
    assert [a.logp for _, a in prompted] == pytest.approx(expected, abs=1e-4)
    without = generate_answers(model, tiny_tokenizer, PROMPTS, config, False)
    assert all(a.logp is None for samples in without for a in samples)


@pytest.mark.parametrize("setting", [static_cache, zero3_over_two_processes])
def test_log_probs_from_decoding_hold_where_rows_cannot_leave_the_batch(
    setting, tiny_llama_dir, tiny_tokenizer, monkeypatch
):
    model = model_whose_first_answer_ends_early(tiny_llama_dir, tiny_tokenizer)
    setting(model, monkeypatch)
    config = GenerationConfig(max_new_tokens=12, batch_size=5, chunk_tokens=3)

    answers = generate_answers(model, tiny_tokenizer, PROMPTS, config, False, with_logps=True)

    prompted = [(p, a) for p, (a,) in zip(PROMPTS, answers, strict=True)]
    expected = forward_pass_logps(model, tiny_tokenizer, prompted)
    assert [a.logp for _, a in prompted] == pytest.approx(expected, abs=1e-4)


def test_a_models_own_beam_setting_does_not_turn_greedy_decoding_into_beam_search(
    tiny_llama_dir, tiny_tokenizer
):
    """transformers fills what alol leaves unset from the model's generation config; beams
    would make each answer the best of several rows and misalign the rows' log-probs."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.generation_config.num_beams = 3
    ids = tiny_tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    expected = manual_greedy_ids(model, ids, 8, tiny_tokenizer.eos_token_id)

    [[answer]] = generate_answers(model, tiny_tokenizer, [PROMPTS[0]], GREEDY, False, True)

    assert answer.text == tiny_tokenizer.decode(expected)
    [logp] = forward_pass_logps(model, tiny_tokenizer, [(PROMPTS[0], answer)])
    assert answer.logp == pytest.approx(logp, abs=1e-4)


def test_an_answer_cut_at_the_budget_is_not_finished(tiny_model, tiny_tokenizer):
    """Two new tokens of a random model: it does not say EOS that soon."""
    answers = generate_answers(
        tiny_model, tiny_tokenizer, PROMPTS[:2], GenerationConfig(max_new_tokens=2), False
    )
    assert [answer.finished for (answer,) in answers] == [False, False]


def test_decode_response_cuts_at_eos_and_drops_special_tokens(tiny_tokenizer):
    hello = tiny_tokenizer("Hello", add_special_tokens=False)["input_ids"]
    world = tiny_tokenizer(" world", add_special_tokens=False)["input_ids"]
    ids = [
        tiny_tokenizer.bos_token_id,
        *hello,
        tiny_tokenizer.eos_token_id,
        *world,
        tiny_tokenizer.pad_token_id,
    ]
    assert decode_response(tiny_tokenizer, ids) == "Hello"


def test_an_empty_prompt_starts_from_bos(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    expected = manual_greedy_ids(
        tiny_model, [tiny_tokenizer.bos_token_id], 8, tiny_tokenizer.eos_token_id
    )
    [[response]] = generate_responses(tiny_model, tiny_tokenizer, [""], GREEDY, show_progress=False)
    assert response == tiny_tokenizer.decode(expected, skip_special_tokens=True)


def test_peft_wrapped_models_decode_like_their_base(tiny_llama_dir, tiny_tokenizer):
    """A fresh LoRA adapter has B = 0, so it must not change greedy outputs."""
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    expected = generate_responses(base, tiny_tokenizer, PROMPTS, GREEDY, show_progress=False)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert (
        generate_responses(peft_model, tiny_tokenizer, PROMPTS, GREEDY, show_progress=False)
        == expected
    )


def test_length_sorted_batches_put_the_longest_prompts_first():
    """Lengths [5, 1, 3, 2, 3], batches of 2: order by length desc (ties by index) = 0, 2, 4, 3, 1."""
    assert length_sorted_batches([5, 1, 3, 2, 3], batch_size=2) == [[0, 2], [4, 3], [1]]


@pytest.mark.parametrize(("n", "world_size"), [(0, 2), (7, 3), (10, 4), (2, 5), (9, 1)])
def test_shard_indices_cover_every_index_exactly_once(n, world_size):
    shards = [shard_indices(n, rank, world_size) for rank in range(world_size)]
    assert sorted(index for shard in shards for index in shard) == list(range(n))


def test_shard_indices_are_strided():
    assert shard_indices(7, rank=1, world_size=3) == [1, 4]


def test_shard_indices_reject_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank"):
        shard_indices(4, rank=2, world_size=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_return_sequences": 2}, "do_sample=True"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"do_sample": True, "top_p": 0.0}, "top_p"),
        ({"batch_size": 0}, "batch_size"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
    ],
)
def test_generation_config_rejects_settings_that_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**kwargs)
