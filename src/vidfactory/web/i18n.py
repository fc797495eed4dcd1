"""The console's words in English and Chinese: chosen from the `vf_lang` cookie (the language switch),
else the browser's Accept-Language, else English. Every label has both; the API stays English."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["default_locale", "locale_cookie", "locales", "messages", "pick_locale", "translator"]

locales = ("en", "zh")
default_locale = "en"
locale_cookie = "vf_lang"

messages: dict[str, dict[str, str]] = {
    "en": {
        "app.name": "vidfactory",
        "lang.other": "中文",
        "nav.create": "Create",
        "nav.videos": "Videos",
        "nav.billing": "Billing",
        "nav.developers": "Developers",
        "nav.account": "Account",
        "nav.review": "Review desk",
        "nav.users": "Users",
        "nav.api_docs": "API docs",
        "nav.sign_out": "Sign out",
        "nav.main": "Main",
        "sign_in.title": "Sign in",
        "sign_in.email": "Email",
        "sign_in.password": "Password",
        "sign_in.submit": "Sign in",
        "sign_in.bad_credentials": "The email or password is not right.",
        "sign_in.locked": "This account is locked after repeated failed sign-ins. An operator can unlock it.",
        "sign_in.address_limited": "Too many failed sign-ins from your address. Try again in {seconds} s.",
        "sign_in.unavailable": "Sign-in is unavailable for a moment. Try again shortly.",
        "sign_in.keys_note": "API keys are for the API; people sign in here with their email.",
        "error.csrf": "This form expired or did not come from this page. Reload the page and try again.",
        "error.forbidden": "Your role does not allow this page.",
        "error.not_found": "There is nothing here, or it is not yours to see.",
        "error.title": "Something is not right",
        "error.back": "Back to the start",
        "role.owner": "owner",
        "role.member": "member",
        "role.viewer": "viewer",
        "role.operator": "operator",
        "role.reviewer": "reviewer",
        "home.title": "Welcome",
        "home.signed_in_as": "Signed in as {email} ({role})",
        "account.title": "Account",
        "account.change_password": "Change password",
        "account.current_password": "Current password",
        "account.new_password": "New password",
        "account.save": "Save",
        "account.changed": "Your password is changed. Your other sessions have ended.",
        "account.wrong_current": "The current password is not right.",
        "account.password_rule": "A password has {min}–{max} characters.",
        "billing.title": "Billing",
        "billing.available": "Available",
        "billing.pending": "Held for running jobs",
        "billing.posted": "Spent",
        "billing.tokens": "tokens",
        "developers.title": "Developers",
        "developers.keys": "API keys",
        "developers.prefix": "Prefix",
        "developers.label": "Label",
        "developers.created": "Created",
        "developers.state": "State",
        "developers.active": "active",
        "developers.revoked": "revoked",
        "developers.none": "No API keys yet.",
        "videos.title": "Videos",
        "videos.empty": "No videos yet.",
        "videos.status": "Status",
        "videos.progress": "Progress",
        "videos.prompt": "Prompt",
        "videos.created": "Created",
        "videos.newer": "Newer",
        "videos.older": "Older",
        "video.title": "Video",
        "video.download": "Download",
        "video.sha256": "SHA-256",
        "video.model": "Model",
        "video.size": "Size",
        "video.seconds": "Seconds",
        "status.queued": "queued",
        "status.in_progress": "in progress",
        "status.completed": "completed",
        "status.failed": "failed",
        "status.cancelled": "cancelled",
    },
    "zh": {
        "app.name": "vidfactory",
        "lang.other": "English",
        "nav.create": "创作",
        "nav.videos": "视频",
        "nav.billing": "账单",
        "nav.developers": "开发者",
        "nav.account": "账户",
        "nav.review": "审核台",
        "nav.users": "用户",
        "nav.api_docs": "API 文档",
        "nav.sign_out": "退出登录",
        "nav.main": "主导航",
        "sign_in.title": "登录",
        "sign_in.email": "邮箱",
        "sign_in.password": "密码",
        "sign_in.submit": "登录",
        "sign_in.bad_credentials": "邮箱或密码不正确。",
        "sign_in.locked": "多次登录失败，此账户已被锁定。请联系运营人员解锁。",
        "sign_in.address_limited": "你的地址登录失败次数过多，请 {seconds} 秒后再试。",
        "sign_in.unavailable": "登录暂时不可用，请稍后再试。",
        "sign_in.keys_note": "API 密钥用于 API；用户请在此用邮箱登录。",
        "error.csrf": "此表单已过期或并非来自本页面。请刷新页面后重试。",
        "error.forbidden": "你的角色无权访问此页面。",
        "error.not_found": "这里没有内容，或你无权查看。",
        "error.title": "出了点问题",
        "error.back": "返回首页",
        "role.owner": "所有者",
        "role.member": "成员",
        "role.viewer": "查看者",
        "role.operator": "运营",
        "role.reviewer": "审核员",
        "home.title": "欢迎",
        "home.signed_in_as": "当前登录：{email}（{role}）",
        "account.title": "账户",
        "account.change_password": "修改密码",
        "account.current_password": "当前密码",
        "account.new_password": "新密码",
        "account.save": "保存",
        "account.changed": "密码已修改，你的其他会话已结束。",
        "account.wrong_current": "当前密码不正确。",
        "account.password_rule": "密码长度为 {min}–{max} 个字符。",
        "billing.title": "账单",
        "billing.available": "可用",
        "billing.pending": "运行中任务占用",
        "billing.posted": "已消费",
        "billing.tokens": "令牌",
        "developers.title": "开发者",
        "developers.keys": "API 密钥",
        "developers.prefix": "前缀",
        "developers.label": "标签",
        "developers.created": "创建时间",
        "developers.state": "状态",
        "developers.active": "有效",
        "developers.revoked": "已吊销",
        "developers.none": "还没有 API 密钥。",
        "videos.title": "视频",
        "videos.empty": "还没有视频。",
        "videos.status": "状态",
        "videos.progress": "进度",
        "videos.prompt": "提示词",
        "videos.created": "创建时间",
        "videos.newer": "较新",
        "videos.older": "较早",
        "video.title": "视频",
        "video.download": "下载",
        "video.sha256": "SHA-256",
        "video.model": "模型",
        "video.size": "尺寸",
        "video.seconds": "秒数",
        "status.queued": "排队中",
        "status.in_progress": "生成中",
        "status.completed": "已完成",
        "status.failed": "失败",
        "status.cancelled": "已取消",
    },
}


def pick_locale(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's choice, else the first supported language of Accept-Language by weight."""
    if cookie in locales:
        return cookie
    ranked = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        ranked.append((-weight, index, tag.strip().lower().split("-")[0]))
    for _, _, language in sorted(ranked):
        if language in locales:
            return language
    return default_locale


def translator(locale: str) -> Callable[..., str]:
    table = messages[locale]

    def t(key: str, **values: object) -> str:
        return table[key].format(**values) if values else table[key]

    return t
