"""The developers page: API keys and webhooks."""

en = {
    "developers.title": "Developers",
    "developers.keys": "API keys",
    "developers.prefix": "Prefix",
    "developers.label": "Label",
    "developers.created": "Created",
    "developers.state": "State",
    "developers.active": "active",
    "developers.revoked": "revoked",
    "developers.none": "No API keys yet.",
}

zh = {
    "developers.title": "开发者",
    "developers.keys": "API 密钥",
    "developers.prefix": "前缀",
    "developers.label": "标签",
    "developers.created": "创建时间",
    "developers.state": "状态",
    "developers.active": "有效",
    "developers.revoked": "已吊销",
    "developers.none": "还没有 API 密钥。",
}
