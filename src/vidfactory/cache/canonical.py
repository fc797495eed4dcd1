"""The canonical form of a prompt: two prompts share it only when they differ in nothing that changes
the video. A `similar` cache hit needs equal canonical forms, so a clip of something else (another colour,
object, place, number, action, style or camera move, or a negation) is never served.

Exactly these differences are folded, nothing else:

1. width and case: NFKC (full-width letters, digits and punctuation become half-width), then casefold;
2. script: traditional Chinese becomes simplified (OpenCC `t2s`);
3. filler around the request: "please generate a video of …", "a video of …", "…, please";
   "请生成一个…的视频", "生成一段视频：…", "一段…的视频", "…谢谢";
4. punctuation and spacing: punctuation is dropped (an apostrophe or hyphen inside a word joins its
   halves, so "man-eating" never becomes "man eating"; punctuation between digits stays, so "1.5" is not
   "15"); runs of spaces become one; spaces next to a Han character go (Chinese has no word spaces);
5. order of independent phrases: within a sentence, the comma-separated phrases after the first may come
   in any order ("…, cinematic, 4k" = "…, 4k, cinematic") when every one of them is a tag (it names a
   style, camera, lighting, quality, time of day or weather from a fixed vocabulary) and none could be a
   step of a sequence (a sequence word such as "then" or 然后, a pronoun, an English word ending in -s or
   -ed, a Chinese action character or the particle 了). Otherwise the order stays: "a car stops, a door
   opens, a man gets out" is not "a car stops, a man gets out, a door opens". Sentences keep their
   order, and so does the first phrase (the subject and its action).

Anything else (synonyms, articles, plural forms, paraphrase) is a different canonical form: a miss, paid
in full, rather than a guess.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import opencc

__all__ = ["canonical"]

phrase_separators = frozenset(",;、")
sentence_separators = frozenset("。！？\n")
# These end a sentence only before a space or the end, or after a Han character: "u.s.a" and "1.5" go on.
sentence_ends = frozenset(".!?")
word_joiners = frozenset("'’-‐‑")

_lead_en = re.compile(
    r"^(?:please[\s,]*)?(?:(?:can|could|would|will) you (?:please )?)?(?:generate|create|make|render|produce|"
    r"show me|give me)(?: me)? (?:an? |the )?(?:video|clip)(?: clip)?"
    r"(?: (?:of|showing|that shows|depicting|featuring|with)(?![a-z0-9])[\s:,]*|\s*[:,.!?]+\s*|$)")
_lead_en_plain = re.compile(r"^(?:an? )?(?:video|clip) (?:of|showing|depicting)\s+")
_trail_en = re.compile(r"[\s,.!]*(?:please|thanks|thank you)[\s.!]*$")
_zh_polite = r"(?:请你?|麻烦你?|帮我|请帮我|给我|为我)?"
_zh_measure = r"(?:一个|一段|一条|一部)"
_zh_video = r"(?:视频|短片|影片)"
_lead_zh_colon = re.compile(rf"^{_zh_polite}(?:生成|制作|创建|创作){_zh_measure}?{_zh_video}(?:[:：,，\s。!！]+|$)")
_wrap_zh = re.compile(rf"^{_zh_polite}生成{_zh_measure}?(.+?)的{_zh_video}$")
_wrap_zh_plain = re.compile(rf"^{_zh_measure}(.+?)的{_zh_video}$")
_trail_zh = re.compile(r"[\s,，。!！]*(?:谢谢你?|多谢)[\s。!！]*$")

# A phrase holding one of these may be a step of a sequence: its sentence keeps its phrase order.
sequence_words_en = frozenset(
    "then after afterwards before next finally later first until when while once meanwhile suddenly "
    "eventually followed begins starts ends and but or he she it they we i you his her its their".split())
irregular_verbs_en = frozenset(
    "ran runs fell got went came took sat stood flew swam threw caught rose drove rode saw made broke "
    "turned began left jumped".split())
sequence_words_zh = ("然后", "接着", "之后", "随后", "最后", "后来", "直到", "首先", "紧接着", "以后", "之前",
                     "以前", "同时", "突然", "开始", "结束", "先", "再", "又", "当", "他", "她", "它", "并", "而")
action_chars_zh = frozenset("了着过跑跳走飞游停转看吃喝坐站躺爬追打推拉拿扔抱落倒掉冲钻穿进出回起开关离到来去变放唱说笑哭"
                            "睡醒骑逃爆燃摔碎散灭叫照上下")
# Words (English) and fragments (Chinese) that make a phrase a tag: its place in the list means nothing.
tag_words_en = frozenset(
    "cinematic cinematography lighting light lit 4k 8k hd uhd hdr resolution photorealistic realistic "
    "hyperrealistic detailed sharp style aesthetic shot angle view closeup wide telephoto macro lens 35mm 50mm "
    "85mm bokeh depth focus grain film motion timelapse camera handheld drone aerial tracking dolly pan zoom "
    "tone colour color palette grading hour sunset sunrise dawn dusk night morning evening noon twilight fog "
    "foggy mist misty rain rainy snowy storm watercolor watercolour painting anime cartoon pixar cyberpunk "
    "steampunk noir vintage retro minimalist moody dramatic soft warm cool vibrant pastel monochrome sepia 3d "
    "render quality portrait landscape symmetrical overhead topdown pov fisheye".split())
tag_fragments_zh = ("风格", "电影感", "镜头", "特写", "航拍", "俯拍", "仰拍", "视角", "高清", "超清", "画质", "色调", "光线",
                    "光影", "景深", "慢动作", "延时", "写实", "水墨", "油画", "动漫", "卡通", "赛博朋克", "广角", "长焦",
                    "微距", "黄昏", "清晨", "傍晚", "夜晚", "日落", "日出", "薄雾", "暴风雨", "雨天", "雪天", "柔和",
                    "暖色", "冷色", "胶片", "复古", "黑白", "构图", "4k", "8k")
opencc_config = "t2s"


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC(opencc_config)


def _is_han(ch: str) -> bool:
    code = ord(ch)
    return 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3FFFF


def _fold(prompt: str) -> str:
    """Steps 1–2; whitespace runs become one space, and spaces next to a Han character go."""
    text = unicodedata.normalize("NFKC", prompt).casefold()
    if any(_is_han(ch) for ch in text):
        text = _t2s().convert(text)
    words = text.split()
    joined = words[0] if words else ""
    for word in words[1:]:
        joined += word if _is_han(joined[-1]) or _is_han(word[0]) else " " + word
    return joined


def _strip_filler(text: str) -> str:
    """Step 3: one leading and one trailing request phrase, in either language."""
    text = _trail_en.sub("", _trail_zh.sub("", text))
    text = _lead_en.sub("", text, count=1)
    text = _lead_en_plain.sub("", text, count=1)
    text = _lead_zh_colon.sub("", text, count=1)
    body = text.rstrip(" .。!！")
    for wrapper in (_wrap_zh, _wrap_zh_plain):
        match = wrapper.match(body)
        if match is not None:
            return match.group(1)
    return text


def _split(text: str) -> list[list[str]]:
    """Sentences of phrases of raw characters; a separator between two digits is part of a number."""
    sentences: list[list[str]] = [[""]]
    for index, ch in enumerate(text):
        before = text[index - 1] if index else ""
        after = text[index + 1] if index + 1 < len(text) else " "
        between_digits = before.isdigit() and after.isdigit()
        ellipsis = "." in (before, after)
        ends = not ellipsis and (after == " " or (before != "" and _is_han(before)))
        if ch in sentence_separators or (ch in sentence_ends and ends):
            sentences.append([""])
        elif ch in phrase_separators and not between_digits:
            sentences[-1].append("")
        else:
            sentences[-1][-1] += ch
    return sentences


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSC"


def _clean(phrase: str) -> str:
    """Step 4 for one phrase."""
    out: list[str] = []
    for index, ch in enumerate(phrase):
        before = phrase[index - 1] if index else ""
        after = phrase[index + 1] if index + 1 < len(phrase) else ""
        if not _is_punctuation(ch):
            out.append(ch)
        elif before.isdigit() and after.isdigit():
            out.append(ch)
        elif ch in word_joiners and before.isalnum() and after.isalnum():
            continue
        else:
            out.append(" ")
    return _fold("".join(out))


def _may_be_a_step(phrase: str) -> bool:
    words = phrase.split()
    if not words:
        return False
    if any(word in sequence_words_en for word in words) or any(w in phrase for w in sequence_words_zh):
        return True
    if any(word in irregular_verbs_en or _verb_form(word) for word in words):
        return True
    return any(ch in action_chars_zh for ch in phrase)


def _verb_form(word: str) -> bool:
    """-s and -ed words may be verbs ("opens", "jumped"); a plural noun is taken for one too."""
    return word.isascii() and word.isalpha() and (word.endswith("ed") or (word.endswith("s") and not word.endswith("ss")))


def _is_tag(phrase: str) -> bool:
    return any(word in tag_words_en for word in phrase.split()) or any(f in phrase for f in tag_fragments_zh)


def _order(phrases: list[str]) -> list[str]:
    """Step 5: the first phrase stays; the rest are sorted when all are tags and none could be a step."""
    head, rest = phrases[:1], phrases[1:]
    if len(rest) < 2 or not all(map(_is_tag, rest)) or any(map(_may_be_a_step, rest)):
        return phrases
    return head + sorted(rest)


def canonical(prompt: str) -> str:
    """The prompt's canonical form ('' when nothing but filler and punctuation is left)."""
    sentences = []
    for sentence in _split(_strip_filler(_fold(prompt))):
        phrases = [p for p in map(_clean, sentence) if p]
        if phrases:
            sentences.append(", ".join(_order(phrases)))
    return ". ".join(sentences)
