"""The prompts package, without a database: templates render through a narrow sandbox with clear
errors; the built-in library renders in English and Chinese; rule-based enhancement adds at most four
cinematic settings in the prompt's language and lands at 60–200 words; LLM enhancement talks to an
OpenAI-compatible endpoint (a real local HTTP server here) and falls back to the rules when it fails;
batches expand as a cartesian product or zipped, under a limit."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vidfactory.prompts.batch import expand
from vidfactory.prompts.enhance import (
    LlmEndpoint,
    detect_language,
    enhance,
    enhance_llm,
    enhance_rules,
    word_count,
)
from vidfactory.prompts.errors import PromptError, TemplateError
from vidfactory.prompts.library import library
from vidfactory.prompts.templates import Template, check_template, render

chars_max = 4000


def template(body: str, **fields) -> Template:
    return Template(name="t", body=body, **fields)


# --- templates ------------------------------------------------------------------------------------

def test_a_template_renders_its_form_and_variables():
    t = template("A {{ style }} video of {{ product }}; {{ keywords }}. Mood: {{ mood }}.", style="bright",
                 keywords=("fresh", "modern"), mood="calm")
    rendered = render(t, {"product": "a teapot"}, chars_max)
    assert rendered.prompt == "A bright video of a teapot; fresh, modern. Mood: calm."
    assert rendered.variables == {"product": "a teapot"}
    # A request may override a form field the body uses.
    assert render(t, {"product": "a cup", "mood": "bold"}, chars_max).prompt.endswith("Mood: bold.")


@pytest.mark.parametrize(("variables", "fragment"), [
    ({}, "missing a variable: 'product' is undefined"),
    ({"product": "x", "prodcut": "y"}, "has no variable(s) prodcut"),
    ({"product": 5}, "must be a string"),
    ({"product": "x" * 501}, "over 500 characters"),
    ({"1bad": "x"}, "not an identifier"),
])
def test_missing_unknown_and_bad_variables_are_named(variables, fragment):
    with pytest.raises(TemplateError) as caught:
        render(template("A video of {{ product }}."), variables, chars_max)
    assert fragment in str(caught.value)
    assert caught.value.code == "template_error"


def test_optional_variables_and_defaults():
    t = template("{{ city }}{% if season is defined %} in {{ season }}{% endif %}, {{ mood|default('calm') }}",
                 defaults={"city": "Hangzhou"})
    assert render(t, {}, chars_max).prompt == "Hangzhou, calm"
    assert render(t, {"season": "spring", "city": "Xi'an"}, chars_max).prompt == "Xi'an in spring, calm"
    assert check_template(t) == {"mood", "season"}  # mood: the form leaves it empty
    with pytest.raises(TemplateError, match="never uses"):
        check_template(template("{{ a }}", defaults={"b": "x"}))


@pytest.mark.parametrize(("body", "fragment"), [
    ("{{ x * 100000000 }}", "'*'"),
    ("{{ 9 ** 9 ** 9 }}", "'**'"),
    ("{{ '%999999999s' % x }}", "'%'"),
    ("{% for i in range(10) %}{{ x }}{% endfor %}", "loops"),
    ("{{ x.ljust(1000000000) }}", "calls"),
    ("{% macro m() %}{% endmacro %}", "macros"),
    ("{% include 'other' %}", "includes"),
    ("{% extends 'base' %}", "extends"),
    ("{{ x|join(x) }}", "filter 'join' is not allowed"),
    ("{{ x|center(1000000000) }}", "filter 'center' is not allowed"),
    ("{{ x", "syntax error on line 1"),
    ("{{ " + "(" * 1300 + "x" + ")" * 1300 + " }}", "nested too deeply"),
    ("{{ " + "x." * 1900 + "y }}", "nested too deeply"),
    ("", "empty"),
    ("x" * 4001, "over 4000 characters"),
])
def test_the_sandbox_refuses_what_could_burn_cpu_or_memory(body, fragment):
    with pytest.raises(TemplateError) as caught:
        render(template(body), {"x": "a"}, chars_max)
    assert fragment in str(caught.value)


def test_unsafe_attributes_and_oversized_output_are_errors():
    with pytest.raises(TemplateError, match="unsafe"):
        render(template("{{ x.__class__ }}"), {"x": "a"}, chars_max)
    with pytest.raises(TemplateError, match="rendered 1000 characters"):
        render(template("{{ x }}{{ x }}"), {"x": "a" * 500}, 999)
    with pytest.raises(TemplateError, match="empty prompt"):
        render(template("{% if x == 'y' %}z{% endif %}"), {"x": "a"}, chars_max)


def test_the_library_renders_in_english_and_chinese():
    names = set(library)
    for required in ("product_intro", "festival_greeting", "logo_reveal"):
        assert {required, f"{required}_zh"} <= names
    assert len(names) >= 10
    for t in library.values():
        needed = check_template(t)
        prompt = render(t, {name: "示例" if t.language == "zh" else "Example" for name in needed}, chars_max).prompt
        assert detect_language(prompt) == t.language, (t.name, prompt)
        assert t.seconds and t.size
    intro = render(library["product_intro_zh"], {"product": "智能手表"}, chars_max).prompt
    assert "智能手表" in intro and "高端、现代" in intro


# --- rule-based enhancement -----------------------------------------------------------------------

settings_terms_en = ("shot", "push-in", "dolly", "tracking", "light", "composition")


@pytest.mark.parametrize("prompt", [
    "a red fox", "a red fox running through snow at dawn",
    "a perfume bottle on a marble table", "a woman walking her dog along a beach, talking on the phone",
    "tokyo skyline at night", " ".join(["word"] * 150),
])
def test_rules_land_between_60_and_200_words_in_english(prompt):
    result = enhance_rules(prompt)
    assert 60 <= word_count(result.prompt) <= 200, result.prompt
    assert result.prompt.startswith(prompt)  # the user's words are kept, first
    assert result.language == "en" and detect_language(result.prompt) == "en"
    assert len(result.settings) <= 4 and result.mode == "rules"


@pytest.mark.parametrize("prompt", ["狐狸", "一只红狐狸在雪地里奔跑", "夜晚的上海外滩，霓虹灯倒映在江面上", "一位女士在海边散步"])
def test_rules_stay_in_chinese(prompt):
    result = enhance_rules(prompt)
    assert result.language == "zh" and detect_language(result.prompt) == "zh"
    assert 60 <= word_count(result.prompt) <= 200, result.prompt
    assert not any(term in result.prompt for term in settings_terms_en)
    assert result.prompt.startswith(prompt)


def test_rules_add_only_the_settings_a_prompt_lacks():
    full = enhance_rules("a close-up of a watch, slow dolly-in, soft studio lighting, centered composition")
    assert full.settings == ()
    partial = enhance_rules("a wide shot of mountains at golden hour")
    assert partial.settings == ("camera movement", "composition")
    assert "aerial" in partial.prompt and "rule-of-thirds" in partial.prompt
    night = enhance_rules("a city street at night")
    assert "night lighting" in night.prompt
    assert enhance_rules("a red fox").prompt == enhance_rules("a red fox").prompt  # deterministic


def test_rules_leave_long_prompts_alone():
    long = " ".join(["word"] * 250)
    result = enhance_rules(long)
    assert result.prompt == long and result.settings == () and "250 words" in result.warnings[0]
    assert word_count(enhance_rules(" ".join(["word"] * 195)).prompt) <= 200
    with pytest.raises(PromptError):
        enhance_rules("   ")


def test_word_count_and_language():
    assert word_count("a red-fox, running") == 4
    assert word_count("一只狐狸 in snow") == 6
    assert detect_language("a fox") == "en" and detect_language("一只狐狸 fox") == "zh"


# --- LLM enhancement against a local OpenAI-compatible server ---------------------------------------

slow_answer_s = 6.0  # the fake model's slow answer: far past any timeout the tests set


class FakeChat:
    """A real HTTP server speaking the chat-completions shape; `behaviour` decides each answer."""

    def __init__(self) -> None:
        self.behaviour = "ok"
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if fake.behaviour == "slow":
                    time.sleep(slow_answer_s)
                if fake.behaviour == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                content = {"ok": f"Rewritten: {body['messages'][1]['content']}, medium shot, soft light.",
                           "slow": "too late", "empty": "   "}.get(fake.behaviour)
                answer = (b"not json" if fake.behaviour == "garbage" else
                          json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # the client hung up on a slow answer: that is the test

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_chat():
    server = FakeChat()
    yield server
    server.close()


def test_llm_enhancement_uses_the_endpoint(fake_chat):
    endpoint = LlmEndpoint(url=fake_chat.url, model="qwen-test", api_key="sk-secret", timeout_s=5)
    result = enhance_llm("一只红狐狸", endpoint)
    assert (result.mode, result.language, result.warnings) == ("llm", "zh", ())
    assert result.prompt == "Rewritten: 一只红狐狸, medium shot, soft light."
    sent = fake_chat.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-secret"
    assert sent["body"]["model"] == "qwen-test"
    assert "中文" in sent["body"]["messages"][0]["content"]  # the guidance is in the prompt's language
    assert "sk-secret" not in repr(endpoint)


@pytest.mark.parametrize("behaviour", ["error", "garbage", "empty", "slow"])
def test_llm_failure_falls_back_to_the_rules_with_a_warning(fake_chat, behaviour):
    fake_chat.behaviour = behaviour
    endpoint = LlmEndpoint(url=fake_chat.url, model="m", timeout_s=0.3)
    started = time.monotonic()
    result = enhance_llm("a red fox", endpoint)
    # The timeout (0.3 s), not the slow answer, ended the wait; the margin is for a busy machine.
    assert time.monotonic() - started < slow_answer_s / 2
    assert result.mode == "rules" and result.prompt == enhance_rules("a red fox").prompt
    assert "LLM enhancement failed" in result.warnings[-1]


def test_llm_unreachable_falls_back_and_unconfigured_is_an_error():
    result = enhance_llm("a red fox", LlmEndpoint(url="http://127.0.0.1:9/v1", model="m", timeout_s=1))
    assert result.mode == "rules" and "LLM enhancement failed" in result.warnings[0]
    with pytest.raises(PromptError, match="not configured") as caught:
        enhance("a red fox", "llm", None)
    assert caught.value.param == "mode"


# --- batch expansion ------------------------------------------------------------------------------

def test_cartesian_and_zip_expansion_with_groups():
    items = expand({"city": ["Hangzhou", "Chengdu"], "season": ["spring", "autumn", "winter"]}, "cartesian", 10,
                   ["A", "B"])
    assert [tuple(i.variables.values()) for i in items][:3] == [("Hangzhou", "spring"), ("Hangzhou", "autumn"),
                                                                ("Hangzhou", "winter")]
    assert [i.index for i in items] == list(range(6)) and [i.ab_group for i in items] == ["A", "B"] * 3
    zipped = expand({"city": ["a", "b"], "audience": ["x", "y"]}, "zip", 10)
    assert [i.variables for i in zipped] == [{"city": "a", "audience": "x"}, {"city": "b", "audience": "y"}]
    assert zipped[0].ab_group is None
    assert [i.variables for i in expand({}, "cartesian", 1)] == [{}]


def test_expansion_errors():
    with pytest.raises(PromptError, match="zip needs lists of one length"):
        expand({"a": ["1", "2"], "b": ["1"]}, "zip", 10)
    with pytest.raises(PromptError, match="expands to 1000 items; a batch holds at most 100") as caught:
        expand({"a": [str(i) for i in range(10)], "b": [str(i) for i in range(100)]}, "cartesian", 100)
    assert caught.value.code == "batch_too_large"
    with pytest.raises(PromptError, match="empty list"):
        expand({"a": []}, "cartesian", 10)
    with pytest.raises(PromptError, match="distinct"):
        expand({"a": ["1"]}, "cartesian", 10, ["A", "A"])
