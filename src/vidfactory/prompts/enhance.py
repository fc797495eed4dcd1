"""Prompt enhancement, after the Wan prompt-extension guidance: keep the user's meaning and words, add
the shot size, camera movement, lighting and composition (at most four cinematic settings), stay in the
prompt's language, and land between 60 and 200 words.

Two modes. `rules` needs no model: it adds the settings the prompt does not already name, chosen by
what the prompt is about, and then descriptive sentences until it is long enough. `llm` asks any
OpenAI-compatible chat endpoint (a local Qwen behind vLLM, DashScope's compatible mode) and falls back
to the rules, with a warning, when the endpoint fails, times out or answers nonsense.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from vidfactory.prompts.errors import PromptError

__all__ = [
    "Enhanced",
    "LlmEndpoint",
    "cinematic_settings_max",
    "detect_language",
    "enhance",
    "enhance_llm",
    "enhance_rules",
    "word_count",
    "words_max",
    "words_min",
]

words_min = 60
words_max = 200
cinematic_settings_max = 4
llm_answer_chars_max = 4000
llm_response_bytes_max = 1_000_000

cjk = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
word_pattern = re.compile(rf"[{cjk}]|[^\W{cjk}]+")
cjk_pattern = re.compile(rf"[{cjk}]")


def word_count(text: str) -> int:
    """Words as a reader counts them: each Chinese character is one, as are runs of other letters."""
    return len(word_pattern.findall(text))


def detect_language(text: str) -> str:
    """"zh" when Chinese characters outnumber the other words, else "en"."""
    chinese = len(cjk_pattern.findall(text))
    return "zh" if chinese and chinese >= word_count(text) - chinese else "en"


@dataclass(frozen=True)
class Enhanced:
    prompt: str
    mode: str  # what produced it: rules | llm
    language: str
    settings: tuple[str, ...]  # the cinematic settings the rules added (empty for llm)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class LlmEndpoint:
    """An OpenAI-compatible chat endpoint: `url` is its base (…/v1), `/chat/completions` is appended."""

    url: str
    model: str
    api_key: str = ""
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        assert self.url.startswith(("http://", "https://")), "LLM endpoint URL must be http(s)"
        assert self.timeout_s > 0

    def __repr__(self) -> str:  # never print the key
        return f"LlmEndpoint(url={self.url!r}, model={self.model!r}, timeout_s={self.timeout_s})"


# --- rules ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One cinematic setting: the phrase to add per language, and words that show a prompt has one."""

    kind: str
    phrase: dict[str, str]


# Words that mean a prompt already fixes a setting; the rules then leave that setting to the user.
present_markers: dict[str, tuple[str, ...]] = {
    "shot size": ("close-up", "close up", "closeup", "medium shot", "wide shot", "long shot", "full shot",
                  "establishing shot", "extreme close", "特写", "近景", "中景", "全景", "远景"),
    "camera movement": ("dolly", "tracking", "pan ", "panning", "orbit", "crane", "zoom", "handheld",
                        "static camera", "push-in", "push in", "pull back", "aerial", "steadicam",
                        "推进", "拉远", "摇镜", "移镜", "跟拍", "环绕", "升降", "固定镜头", "航拍"),
    "lighting": ("lighting", "light ", "sunlight", "golden hour", "backlit", "backlight", "neon", "daylight",
                 "光线", "光照", "逆光", "灯光", "阳光", "霓虹", "日光"),
    "composition": ("composition", "centered", "rule of thirds", "rule-of-thirds", "symmetr", "depth of field",
                    "构图", "居中", "对称", "三分法", "景深"),
}

# What a prompt is about picks the settings that suit it: the first profile whose words it contains.
profile_markers: dict[str, tuple[str, ...]] = {
    "product": ("product", "logo", "bottle", "phone", "watch", "perfume", "package", "shoe", "dish", "food",
                "产品", "标志", "瓶", "手机", "手表", "香水", "包装", "美食", "菜"),
    "scenery": ("city", "mountain", "sea", "ocean", "forest", "landscape", "skyline", "river", "street",
                "village", "travel", "城市", "山", "海", "森林", "风景", "天际线", "河", "街", "村", "旅"),
    "people": ("woman", "man", "girl", "boy", "people", "person", "child", "dancer", "family", "crowd",
               "女", "男", "人", "孩", "舞者", "家"),
}
profiles: dict[str, dict[str, dict[str, str]]] = {
    "product": {"shot size": {"en": "close-up shot", "zh": "特写镜头"},
                "camera movement": {"en": "slow dolly-in", "zh": "镜头缓慢推进"},
                "lighting": {"en": "soft studio lighting with gentle highlights", "zh": "柔和的影棚光，带有细腻高光"},
                "composition": {"en": "centered composition", "zh": "居中构图"}},
    "scenery": {"shot size": {"en": "wide shot", "zh": "远景"},
                "camera movement": {"en": "smooth aerial tracking shot", "zh": "航拍镜头平稳跟随"},
                "lighting": {"en": "warm golden-hour light", "zh": "温暖的黄金时刻光线"},
                "composition": {"en": "rule-of-thirds composition", "zh": "三分法构图"}},
    "people": {"shot size": {"en": "medium shot", "zh": "中景"},
               "camera movement": {"en": "smooth tracking shot", "zh": "镜头平稳跟拍"},
               "lighting": {"en": "soft natural daylight", "zh": "柔和的自然光"},
               "composition": {"en": "rule-of-thirds composition", "zh": "三分法构图"}},
    "default": {"shot size": {"en": "medium shot", "zh": "中景"},
                "camera movement": {"en": "slow push-in", "zh": "镜头缓慢推进"},
                "lighting": {"en": "soft natural light", "zh": "柔和的自然光"},
                "composition": {"en": "balanced composition", "zh": "均衡构图"}},
}
night_markers = ("night", "neon", "夜", "霓虹")
night_lighting = {"en": "moody night lighting with neon reflections", "zh": "夜晚氛围光，带有霓虹倒影"}

# Descriptive sentences added, in order, until the prompt reaches words_min.
details: dict[str, tuple[str, ...]] = {
    "en": ("The main subject is rendered with crisp, realistic detail in texture, material and colour.",
           "Motion is natural and fluid, with subtle movement in the foreground and the background.",
           "The surroundings are coherent and richly detailed, giving a clear sense of depth and space.",
           "The atmosphere stays consistent from the first frame to the last, at a smooth and steady pace.",
           "Balanced colour grading, high dynamic range, high definition, cinematic quality."),
    "zh": ("主体细节清晰逼真，质感、材质与色彩真实自然。",
           "画面运动自然流畅，前景与背景都有细微的动态变化。",
           "主体周围的环境连贯且细节丰富，空间层次与纵深感清晰。",
           "整体氛围从第一帧到最后一帧保持一致，节奏平稳舒缓。",
           "色彩平衡，高动态范围，高清画质，电影级质感。"),
}


def _contains(text: str, markers: tuple[str, ...]) -> bool:
    lowered = f" {text.lower()} "
    return any(marker in lowered for marker in markers)


def _settings_for(prompt: str, language: str) -> list[tuple[str, str]]:
    """(kind, phrase) for each setting the prompt lacks, at most cinematic_settings_max."""
    profile = next((name for name, markers in profile_markers.items() if _contains(prompt, markers)), "default")
    chosen = []
    for kind, phrases in profiles[profile].items():
        if _contains(prompt, present_markers[kind]):
            continue
        phrase = phrases[language]
        if kind == "lighting" and _contains(prompt, night_markers):
            phrase = night_lighting[language]
        chosen.append((kind, phrase))
    return chosen[:cinematic_settings_max]


def _join(parts: list[str], language: str) -> str:
    if language == "zh":
        return "".join(part if part.endswith(("。", "！", "？", "”")) else part + "。" for part in parts)
    return " ".join(part if part.endswith((".", "!", "?", '"')) else part + "." for part in parts)


def _settings_sentence(phrases: list[str], language: str) -> str:
    if language == "zh":
        return "，".join(phrases) + "。"
    sentence = ", ".join(phrases)
    return sentence[0].upper() + sentence[1:] + "."


def enhance_rules(prompt: str) -> Enhanced:
    """Deterministic: the same prompt always gets the same additions."""
    text = " ".join(prompt.split())
    if not text:
        raise PromptError("prompt", "prompt is empty")
    language = detect_language(text)
    if word_count(text) >= words_max:
        return Enhanced(prompt=text, mode="rules", language=language, settings=(), warnings=(
            f"prompt already has {word_count(text)} words (enhancement stops at {words_max}); left as it is",))
    parts = [text]
    settings = _settings_for(text, language)
    if settings:
        sentence = _settings_sentence([phrase for _, phrase in settings], language)
        if word_count(_join([*parts, sentence], language)) <= words_max:
            parts.append(sentence)
        else:
            settings = []
    for detail in details[language]:
        if word_count(_join(parts, language)) >= words_min:
            break
        if word_count(_join([*parts, detail], language)) > words_max:
            break
        parts.append(detail)
    return Enhanced(prompt=_join(parts, language), mode="rules", language=language,
                    settings=tuple(kind for kind, _ in settings), warnings=())


# --- LLM ------------------------------------------------------------------------------------------

system_prompts = {
    "en": ("You rewrite prompts for a text-to-video model. Keep the user's meaning, subject, and any quoted "
           "text exactly. Add concrete visual detail: the subject's appearance and action, the setting, and "
           "natural motion. Add at most four cinematic settings chosen from shot size, camera movement, "
           "lighting and composition, unless the user already gave them. Write in English, as one "
           "paragraph of 80 to 100 words (never under 60 or over 200). Answer with the rewritten prompt only."),
    "zh": ("你负责改写文生视频模型的提示词。保持用户原意、主体和引号内的文字不变。补充具体的画面细节：主体的外观与动作、"
           "场景环境、自然的运动。从景别、镜头运动、光线、构图中最多添加四项电影化设定（用户已给出的不再添加）。"
           "用中文写成一段，80到100字（不少于60字，不超过200字）。只回答改写后的提示词。"),
}


class LlmFailed(Exception):
    """The endpoint did not give a usable answer; the caller falls back to the rules."""


def _ask(endpoint: LlmEndpoint, prompt: str, language: str) -> str:
    body = json.dumps({"model": endpoint.model, "temperature": 0.7, "max_tokens": 512,
                       "messages": [{"role": "system", "content": system_prompts[language]},
                                    {"role": "user", "content": prompt}]}).encode()
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    request = urllib.request.Request(endpoint.url.rstrip("/") + "/chat/completions", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as response:
            raw = response.read(llm_response_bytes_max + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:  # HTTPError is a URLError
        raise LlmFailed(f"{type(exc).__name__}: {exc}") from exc
    if len(raw) > llm_response_bytes_max:
        raise LlmFailed(f"answer over {llm_response_bytes_max} bytes")
    try:
        answer = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LlmFailed(f"not an OpenAI chat completion: {exc}") from exc
    if not isinstance(answer, str):
        raise LlmFailed("the completion's content is not text")
    text = " ".join(answer.split()).strip().strip('"').strip()
    if not text or len(text) > llm_answer_chars_max or not word_count(text):
        raise LlmFailed(f"unusable answer of {len(text)} characters")
    return text


def enhance_llm(prompt: str, endpoint: LlmEndpoint) -> Enhanced:
    """The endpoint's rewrite, or the rules' result with a warning saying why the endpoint was not used."""
    text = " ".join(prompt.split())
    if not text:
        raise PromptError("prompt", "prompt is empty")
    language = detect_language(text)
    try:
        answer = _ask(endpoint, text, language)
    except LlmFailed as exc:
        fallback = enhance_rules(text)
        return Enhanced(prompt=fallback.prompt, mode="rules", language=fallback.language,
                        settings=fallback.settings,
                        warnings=(*fallback.warnings, f"LLM enhancement failed ({exc}); used the rule-based result"))
    return Enhanced(prompt=answer, mode="llm", language=language, settings=(), warnings=())


def enhance(prompt: str, mode: str, endpoint: LlmEndpoint | None) -> Enhanced:
    """`mode` "llm" without an endpoint configured is the caller's error, not a silent fallback."""
    if mode == "rules":
        return enhance_rules(prompt)
    if mode == "llm":
        if endpoint is None:
            raise PromptError("mode", "LLM enhancement is not configured on this server (set "
                                      "VIDFACTORY_ENHANCE_LLM_URL); use mode \"rules\"", code="unsupported_parameter")
        return enhance_llm(prompt, endpoint)
    raise PromptError("mode", f"unknown enhancement mode {mode!r}; use \"rules\" or \"llm\"")
