"""The billing page."""

en = {
    "billing.title": "Billing",
    "billing.available": "Available",
    "billing.pending": "Held for running jobs",
    "billing.posted": "Spent",
    "billing.tokens": "tokens",
}

zh = {
    "billing.title": "账单",
    "billing.available": "可用",
    "billing.pending": "运行中任务占用",
    "billing.posted": "已消费",
    "billing.tokens": "令牌",
}
