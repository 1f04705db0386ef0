"""The chat prompt options as pytest reads them."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--mmlu-chat-template"], {}, (True, None, None)),
        (["--mmlu-chat-template=chatml", "--mmlu-fewshot-as-multiturn=false"], {}, ("chatml", False, None)),
        (
            [],
            {"PYTEST_MMLU_CHAT_TEMPLATE": "true", "PYTEST_MMLU_SYSTEM_INSTRUCTION": "Be brief."},
            (True, None, "Be brief."),
        ),
        (["--mmlu-chat-template=false"], {}, (None, None, None)),
        # Verbatim, as lm-eval takes --system_instruction: the whitespace around it changes the prompt.
        (["--mmlu-chat-template", "--mmlu-system-instruction=  Be brief.\n"], {}, (True, None, "  Be brief.\n")),
        ([], {"PYTEST_MMLU_SYSTEM_INSTRUCTION": "\tBe brief. "}, (None, None, "\tBe brief. ")),
    ],
)
def test_chat_settings(pytester, monkeypatch, args, env, expected):
    from pytest_mmlu.mmlu.chat import prompt_format_of
    from pytest_mmlu.settings import resolve

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = resolve(pytester.parseconfig(*args))
    assert (settings.chat_template, settings.fewshot_as_multiturn, settings.system_instruction) == expected
    fmt = prompt_format_of(settings)
    assert fmt.fewshot_as_multiturn == (expected[1] if expected[1] is not None else expected[0] is not None)


def test_fewshot_as_multiturn_without_a_chat_template_is_a_usage_error(pytester):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest_inprocess("--mmlu-fewshot-as-multiturn")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--mmlu-fewshot-as-multiturn from command line --mmlu-fewshot-as-multiturn needs --mmlu-chat-template*"]
    )
