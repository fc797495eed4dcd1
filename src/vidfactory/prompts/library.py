"""The built-in template library, in English and Chinese. Names ending in `_zh` render Chinese prompts.

Every body names its subject variables (what a marketing team fills in) and uses the form fields, so a
request needs only the variables: `{"template": "product_intro", "variables": {"product": "..."}}`."""

from __future__ import annotations

from vidfactory.prompts.templates import Template

__all__ = ["builtin", "library"]


def _pair(name: str, en: dict, zh: dict, **shared) -> tuple[Template, Template]:
    return (Template(name=name, language="en", **shared, **en),
            Template(name=f"{name}_zh", language="zh", **shared, **zh))


_templates = (
    *_pair(
        "product_intro", seconds=5, size="832x480",
        en=dict(description="Product introduction: the product turns on a clean set while its features show.",
                industry="consumer electronics", style="clean commercial", keywords=("premium", "modern"),
                camera="slow orbit around the product", mood="confident",
                body="A {{ style }} product video of {{ product }} for the {{ industry }} market. "
                     "{{ product|capitalize }} rests on a minimal pedestal and slowly turns, showing "
                     "{{ feature|default('its design and finish') }}. {{ camera|capitalize }}. "
                     "Keywords: {{ keywords }}. The mood is {{ mood }}."),
        zh=dict(description="产品介绍：产品在简洁的布景中旋转，展示卖点。",
                industry="消费电子", style="简洁的商业广告", keywords=("高端", "现代"),
                camera="镜头缓慢环绕产品", mood="自信",
                body="{{ style }}风格的{{ industry }}产品视频，主角是{{ product }}。{{ product }}放在简约的展台上缓缓旋转，"
                     "展示{{ feature|default('它的设计与质感') }}。{{ camera }}。关键词：{{ keywords }}。整体氛围{{ mood }}。"),
    ),
    *_pair(
        "festival_greeting", seconds=5, size="832x480",
        en=dict(description="Festival greeting: a warm scene for a holiday, with the brand's wishes.",
                industry="retail", style="warm festive", keywords=("lanterns", "celebration"),
                camera="gentle push-in", mood="joyful",
                body="A {{ style }} greeting video for {{ festival }} from {{ brand }}. Streets glow with "
                     "{{ keywords }}, families gather and smile. {{ camera|capitalize }} towards the words "
                     "\"{{ message|default('Happy holidays') }}\". The mood is {{ mood }}."),
        zh=dict(description="节日祝福：温馨的节日场景与品牌祝福。",
                industry="零售", style="温暖喜庆", keywords=("灯笼", "团圆"),
                camera="镜头缓缓推进", mood="欢乐",
                body="{{ brand }}的{{ festival }}祝福视频，{{ style }}风格。街道上{{ keywords }}交相辉映，家人团聚，笑容满面。"
                     "{{ camera }}，画面出现“{{ message|default('节日快乐') }}”字样。整体氛围{{ mood }}。"),
    ),
    *_pair(
        "logo_reveal", seconds=3, size="832x480",
        en=dict(description="Brand logo reveal: particles or light assemble into the logo.",
                industry="technology", style="sleek minimal", keywords=("light streaks", "particles"),
                camera="static camera, centered", mood="bold",
                body="A {{ style }} logo reveal for {{ brand }}. {{ keywords|capitalize }} swirl on a dark "
                     "background and assemble into the {{ brand }} logo{% if tagline is defined %} above the "
                     "tagline \"{{ tagline }}\"{% endif %}. {{ camera|capitalize }}. The mood is {{ mood }}."),
        zh=dict(description="品牌标志揭幕：粒子或光线汇聚成标志。",
                industry="科技", style="简洁利落", keywords=("光束", "粒子"),
                camera="固定镜头，居中构图", mood="大气",
                body="{{ brand }}的标志揭幕动画，{{ style }}风格。{{ keywords }}在深色背景中旋转汇聚，组成{{ brand }}的标志"
                     "{% if tagline is defined %}，下方出现标语“{{ tagline }}”{% endif %}。{{ camera }}。整体氛围{{ mood }}。"),
    ),
    *_pair(
        "real_estate_tour", seconds=5, size="832x480",
        en=dict(description="Real-estate tour: a walk through a home or building.",
                industry="real estate", style="bright architectural", keywords=("spacious", "natural light"),
                camera="smooth steadicam walk-through", mood="inviting",
                body="A {{ style }} tour of {{ property }}. {{ camera|capitalize }} through rooms that feel "
                     "{{ keywords }}, ending at {{ highlight|default('the view from the window') }}. "
                     "The mood is {{ mood }}."),
        zh=dict(description="房产导览：穿行于住宅或楼宇之中。",
                industry="房地产", style="明亮的建筑摄影", keywords=("宽敞", "自然光"),
                camera="稳定器平稳穿行", mood="温馨",
                body="{{ property }}的{{ style }}风格导览。{{ camera }}，房间{{ keywords }}，"
                     "最后停在{{ highlight|default('窗外的景色') }}。整体氛围{{ mood }}。"),
    ),
    *_pair(
        "food_showcase", seconds=4, size="832x480",
        en=dict(description="Food showcase: a dish in appetising close-up.",
                industry="food and beverage", style="appetising close-up", keywords=("steam", "fresh ingredients"),
                camera="slow dolly-in", mood="warm",
                body="An {{ style }} video of {{ dish }}{% if restaurant is defined %} at {{ restaurant }}"
                     "{% endif %}. {{ keywords|capitalize }}, glistening sauce, hands plating the last detail. "
                     "{{ camera|capitalize }}. The mood is {{ mood }}."),
        zh=dict(description="美食展示：菜品的诱人特写。",
                industry="餐饮", style="诱人的美食特写", keywords=("热气", "新鲜食材"),
                camera="镜头缓慢推进", mood="温暖",
                body="{% if restaurant is defined %}{{ restaurant }}的{% endif %}{{ dish }}，{{ style }}。"
                     "{{ keywords }}，酱汁晶莹，一双手完成最后的摆盘。{{ camera }}。整体氛围{{ mood }}。"),
    ),
    *_pair(
        "travel_promo", seconds=5, size="832x480",
        en=dict(description="Travel promotion: a destination in its best season.",
                industry="tourism", style="cinematic travel", keywords=("landmarks", "local life"),
                camera="sweeping aerial shot", mood="adventurous",
                body="A {{ style }} video of {{ city }} in {{ season|default('spring') }}"
                     "{% if audience is defined %} for {{ audience }}{% endif %}. {{ camera|capitalize }} over "
                     "{{ keywords }}. The mood is {{ mood }}."),
        zh=dict(description="旅游推广：目的地最美的季节。",
                industry="旅游", style="电影感旅拍", keywords=("地标", "市井生活"),
                camera="航拍大范围掠过", mood="向往",
                body="{{ season|default('春天') }}的{{ city }}，{{ style }}风格"
                     "{% if audience is defined %}，面向{{ audience }}{% endif %}。{{ camera }}，掠过{{ keywords }}。"
                     "整体氛围{{ mood }}。"),
    ),
)

library: dict[str, Template] = {t.name: t for t in _templates}


def builtin(name: str) -> Template | None:
    return library.get(name)
